"""Notebook 00 with LANGUAGE = "th" in SMOKE mode: the Thai corpus, held-out texts and lambada task flow through."""

from __future__ import annotations

import json
import math

import pytest

from cptnb.notebooks import run_notebook


@pytest.mark.slow
@pytest.mark.notebook
def test_quickstart_runs_on_thai(tmp_path):
    run_notebook("00_quickstart", tmp_path, {"SMOKE": True, "LANGUAGE": "th"}, timeout_s=300)
    report = json.loads((tmp_path / "data" / "report.json").read_text(encoding="utf-8"))
    assert report["total"]["docs_kept"] == report["total"]["docs_in"] == 23  # every Thai sample document
    assert "PyThaiNLP" in report["segmentation"]["domain"]["filters"]
    # Fertility counts PyThaiNLP words: a Thai word is a few characters, not a whole clause.
    assert report["tokens"]["tokens_per_word"] < 20
    before_after = json.loads((tmp_path / "before_after.json").read_text(encoding="utf-8"))
    rows = {(r["set"], r["metric"]): r for r in before_after["comparison"]}
    bpb = rows[("domain", "bits_per_byte")]
    assert math.isfinite(bpb["base"]) and bpb["adapted"] < bpb["base"]
    assert ("general", "bits_per_byte") in rows  # the English retention line
