"""Notebook 07 (vocabulary) in SMOKE mode: what it writes must show the extension, the init comparison and both runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import pytest

from cptnb.notebooks import run_notebook


def check_vocabulary(out: Path) -> None:
    """Assertions on notebook 07's OUT_DIR (usable as a CHECKS entry in test_notebooks.py)."""
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    domain = results["fertility"]["domain"]
    assert domain["after"]["tokens_per_word"] < domain["before"]["tokens_per_word"]
    assert 0 < domain["after"]["new_id_share"] < 1
    general = results["fertility"]["general"]
    assert general["general"] is True and general["changed_docs"] <= general["before"]["docs"]
    resize = results["resize"]
    assert resize["rows_after"] % 64 == 0 and resize["rows_after"] >= resize["tokenizer_size"]
    assert set(results["init"]) == {"base", "mean_of_pieces", "global_mean", "random"}
    assert all(math.isfinite(v) for by in results["init"].values() for v in by.values())
    runs = results["runs"]
    assert set(runs) == {"plain", "extended"} and runs["plain"]["steps"] == runs["extended"]["steps"]
    assert all(math.isfinite(r["bits_per_byte"]["domain"]) for r in runs.values())
    assert len(results["verdict"]) >= 2 and "95% CI" in results["verdict"][0]
    assert (out / "gap.png").is_file() and (out / "vocab" / "model" / "cptnb_vocab.json").is_file()
    assert (out / "extended" / "embedding_stage" / "metrics.jsonl").is_file()
    assert (out / "extended" / "adapter" / "cptnb_vocab.json").is_file()


@pytest.mark.slow
@pytest.mark.notebook
def test_vocabulary_notebook_smoke_run(tmp_path):
    executed = run_notebook("07_vocabulary", tmp_path, {"SMOKE": True}, timeout_s=600)
    errors = [o for c in nbformat.read(str(executed), as_version=4).cells for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors == []
    check_vocabulary(tmp_path)
