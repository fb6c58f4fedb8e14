"""`cptnb compare` judges the before/after change against the declared retention threshold (train.max_general_*)."""

from __future__ import annotations

import json
import math

import pytest

from cptnb.cli import main
from cptnb.config import Recipe
from cptnb.evaluate.compare import compare_results, retention
from cptnb.evaluate.results import build_results
from cptnb.retention import RetentionThreshold


def _heldout(nll_per_doc, tokens=100, n_bytes=300):
    items = [{"id": f"{i}-doc", "nll_nats": float(x), "tokens": tokens, "bytes": n_bytes}
             for i, x in enumerate(nll_per_doc)]
    nll, t, b = sum(nll_per_doc), tokens * len(items), n_bytes * len(items)
    return {"loss": nll / t, "perplexity": math.exp(nll / t), "bits_per_byte": nll / math.log(2) / b,
            "tokens": t, "bytes": b, "docs": len(items), "items": items}


def _general_task(correct):
    items = [{"id": f"g{i}", "acc": int(c), "acc_norm": int(c), "loglikelihoods": [-1.0, -2.0], "gold": 0}
             for i, c in enumerate(correct)]
    n = len(items)
    acc = sum(i["acc"] for i in items) / n
    return {"kind": "multiple_choice", "role": "general", "num_fewshot": 5, "n": n,
            "metrics": {"acc": acc, "acc_norm": acc}, "stderr": {"acc": None, "acc_norm": None}, "items": items}


def _docs(general_scale, correct_after):
    base_nll = [100.0 + 3 * i for i in range(30)]
    base = build_results({"general_en": _general_task([i % 2 == 0 for i in range(40)])},
                         {"general": _heldout(base_nll)}, {"model": "base", "limit": None})
    adapted = build_results({"general_en": _general_task(correct_after)},
                            {"general": _heldout([x * general_scale for x in base_nll])},
                            {"model": "adapted", "limit": None})
    return base, adapted


def test_the_verdict_says_within_or_beyond_the_declared_threshold():
    rows = compare_results(*_docs(1.03, [i % 2 == 0 for i in range(40)]), n_boot=500)  # +3% bits per byte
    beyond = retention(rows, threshold=RetentionThreshold(max_general_bpb_rise=0.02))
    assert beyond.within_threshold is False and "+3.0% (limit +2.0%)" in beyond.threshold_crossed[0]
    assert "Beyond the declared retention threshold" in beyond.sentence
    within = retention(rows, threshold=RetentionThreshold(max_general_bpb_rise=0.05))
    assert within.within_threshold is True and "Within the declared retention threshold" in within.sentence
    assert retention(rows).within_threshold is None and "threshold" not in retention(rows).sentence
    # Accuracy: 20 of 40 right before, 16 after: -10 points against a 5-point limit.
    dropped = compare_results(*_docs(1.0, [i % 2 == 0 and i < 32 for i in range(40)]), n_boot=500)
    verdict = retention(dropped, threshold=RetentionThreshold(max_general_task_drop=0.05))
    assert verdict.within_threshold is False and "-10.0 points (limit -5.0)" in verdict.threshold_crossed[0]


def test_compare_reads_the_threshold_from_the_recipe_or_the_options(tmp_path, capsys):
    base, adapted = _docs(1.03, [i % 2 == 0 for i in range(40)])
    for name, doc in (("base", base), ("adapted", adapted)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(doc), encoding="utf-8")
    Recipe().replace(train={"max_general_bpb_rise": 0.02}).to_yaml(tmp_path / "recipe.yaml")
    common = [str(tmp_path / "base"), str(tmp_path / "adapted"), "--n-boot", "200"]
    assert main(["compare", *common, "--out", str(tmp_path / "a"), "--config", str(tmp_path / "recipe.yaml")]) == 0
    payload = json.loads((tmp_path / "a" / "comparison.json").read_text(encoding="utf-8"))
    assert payload["within_threshold"] is False and "at most 2.0%" in payload["threshold"]
    assert "Beyond the declared retention threshold" in capsys.readouterr().out
    assert main(["compare", *common, "--out", str(tmp_path / "b"), "--train.max_general_bpb_rise", "0.04"]) == 0
    assert json.loads((tmp_path / "b" / "comparison.json").read_text(encoding="utf-8"))["within_threshold"] is True
    assert main(["compare", *common, "--out", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "comparison.json").read_text(encoding="utf-8"))["threshold"] is None


@pytest.mark.parametrize("value", ["-0.1", "1.5"])
def test_compare_refuses_a_threshold_outside_zero_to_one(tmp_path, value, capsys):
    assert main(["compare", "x", "y", "--out", str(tmp_path), "--train.max_general_bpb_rise", value]) == 2
    assert "max_general_bpb_rise must be a share in [0, 1)" in capsys.readouterr().err
