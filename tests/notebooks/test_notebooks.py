"""Every notebook in notebooks/: its house style, and a headless smoke run (SMOKE=True) checked on what it writes.

A notebook added later is covered automatically: the structure test and a smoke
run (no error, something written to OUT_DIR) apply to it as soon as it exists;
add a checker to CHECKS for assertions on its own outputs.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import nbformat
import pytest

from cptnb.config import Recipe
from cptnb.notebook_display import RunResult, forgetting_verdict
from cptnb.notebooks import (
    NOTEBOOK_DIR,
    NotebookError,
    is_display_only,
    list_notebooks,
    run_notebook,
    run_series,
    strip_outputs,
    structure_problems,
)
from cptnb.tables import markdown_table
from cptnb.train.monitor import read_metrics

NOTEBOOKS = list_notebooks()
ids = [p.stem for p in NOTEBOOKS]


# ------------------------------------------------------------------ structure


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_follows_the_house_style(path):
    assert structure_problems(path) == []


def test_every_shipped_notebook_is_listed():
    assert {"00_quickstart", "01_corpus", "04_forgetting"} <= {p.stem for p in NOTEBOOKS}
    assert all(p.parent == NOTEBOOK_DIR for p in NOTEBOOKS)


def _notebook(cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    return nb


def _good_cells():
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    params = code("SMOKE = False\nSTEPS = 3")
    params.metadata["tags"] = ["parameters"]
    return [
        md("# Title\n\n> **What you get:** x. **Time:** 1 minute on a Colab T4, 3 on a CPU."),
        code('import importlib.util\nif importlib.util.find_spec("cptnb") is None:\n    %pip install -q cptnb'),
        params,
        code("if SMOKE:\n    STEPS = 1"),
        md("## Step\nWhy."),
        code("x = STEPS * 2"),
        code("display(x)"),
    ]


def test_structure_checker_accepts_a_good_notebook_and_names_each_fault(tmp_path):
    path = tmp_path / "nb.ipynb"
    nbformat.write(_notebook(_good_cells()), str(path))
    assert structure_problems(path) == []

    cells = _good_cells()
    cells[0].source = "# Title\n\n> **Time:** a minute."  # no T4, no CPU
    cells[5].source = "x = STEPS * 2\ny = x + 1"
    cells.insert(6, nbformat.v4.new_code_cell("z = 3"))  # a code step with no markdown "why" before it
    cells[3].outputs = [nbformat.v4.new_output("stream", text="hi")]
    cells[3].execution_count = 4
    extra = nbformat.v4.new_code_cell("SMOKE = True")
    extra.metadata["tags"] = ["parameters"]
    cells.append(extra)
    nbformat.write(_notebook(cells), str(path))
    problems = "\n".join(structure_problems(path))
    for needle in ("T4", "CPU", "cell 6: a code step needs a markdown", "cell 3: committed with outputs",
                   "cell 3: committed with an execution count", "exactly one cell"):
        assert needle in problems, needle

    strip_outputs(path)
    assert "committed with" not in "\n".join(structure_problems(path))


def test_a_parameter_line_papermill_cannot_read_is_named(tmp_path):
    cells = _good_cells()
    cells[2].source = "SMOKE = False\n# a comment = fine\nSTEPS = 3  # 0 = as many as the data allows"
    path = tmp_path / "nb.ipynb"
    nbformat.write(_notebook(cells), str(path))
    assert structure_problems(path) == ["cell 2, line 3: more than one '=' (papermill cannot read it; write ':' in "
                                        "the comment): STEPS = 3  # 0 = as many as the data allows"]


def test_install_cell_must_come_first(tmp_path):
    cells = _good_cells()
    cells[1].source = "import cptnb"
    path = tmp_path / "nb.ipynb"
    nbformat.write(_notebook(cells), str(path))
    assert any("install" in p for p in structure_problems(path))
    cells = _good_cells()
    cells.insert(1, nbformat.v4.new_markdown_cell("Some words before installing."))
    nbformat.write(_notebook(cells), str(path))
    assert any("install" in p for p in structure_problems(path))


@pytest.mark.parametrize(
    ("code", "expected"),
    [("display(x)", True), ("print(a)\ndisplay(Image(filename='p.png'))", True), ("x = 1\ndisplay(x)", False),
     ("train(x)", False), ("%pip install x", False), ("", False)],
)
def test_display_only_cells(code, expected):
    assert is_display_only(code) is expected


def _write_tiny_notebook(path: Path, body: str) -> Path:
    params = nbformat.v4.new_code_cell("SMOKE = False\nX = 1\nOUT_DIR = '.'")
    params.metadata["tags"] = ["parameters"]
    nb = _notebook([params, nbformat.v4.new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


@pytest.mark.notebook
def test_run_series_injects_parameters_and_names_the_failing_notebook(tmp_path):
    dump = "import json, pathlib\npathlib.Path(OUT_DIR, 'seen.json').write_text(json.dumps({'SMOKE': SMOKE, 'X': X}))"
    good = _write_tiny_notebook(tmp_path / "good.ipynb", dump)
    bad = _write_tiny_notebook(tmp_path / "bad.ipynb", "raise ValueError('planted failure')")
    with pytest.raises(NotebookError) as err:
        run_series([str(good), str(bad)], tmp_path / "runs", {"good": {"X": 2}}, smoke=True, timeout_s=120)
    message = str(err.value)
    assert "bad.ipynb failed in cell" in message and "ValueError: planted failure" in message
    assert str(tmp_path / "runs" / "bad" / "bad.ipynb") in message  # where the full traceback is
    seen = json.loads((tmp_path / "runs" / "good" / "seen.json").read_text())
    assert seen == {"SMOKE": True, "X": 2}


# ------------------------------------------------------------------ small helpers the notebooks print with


def test_markdown_table_aligns_numbers_and_escapes_pipes():
    table = markdown_table(["name", "n"], [["a|b", 1234], ["c", 5]]).splitlines()
    assert table[1] == "| --- | ---: |"
    assert table[2] == "| a\\|b | 1,234 |"


def _run(name, method, share, domain_after, general_after):
    before = {"domain": 2.0, "general": 1.0}
    after = {"domain": domain_after, "general": general_after}
    return RunResult(name, method, share, share, 10, 1.0, 1.0, before, after)


def test_forgetting_verdict_reads_the_numbers_either_way():
    helped = forgetting_verdict([_run("a", "lora", 0.0, 1.6, 1.10), _run("b", "lora", 0.2, 1.7, 1.02)])
    assert "8.00 points less damaging" in helped[-2] and "a smaller domain gain" in helped[-2]
    assert "forgot" in helped[0] and "did not forget" not in helped[0]
    hurt = forgetting_verdict([_run("a", "lora", 0.0, 1.6, 0.99), _run("b", "lora", 0.2, 1.5, 1.01)])
    assert "2.00 points more damaging" in hurt[-2] and "an equal or larger domain gain" in hurt[-2]
    assert "did not forget" in hurt[0]


# ------------------------------------------------------------------ smoke runs


def _check_quickstart(out: Path) -> None:
    for name in ("metrics.jsonl", "loss.png", "before_after.md", "before_after.json", "before_after.png"):
        assert (out / name).is_file(), name
    report = json.loads((out / "before_after.json").read_text(encoding="utf-8"))
    scores = {(r["set"], r["metric"]): r for r in report["comparison"]}
    for row in report["comparison"]:
        assert math.isfinite(row["base"]) and math.isfinite(row["adapted"])
    # Training on Vietnamese must make held-out Vietnamese cheaper to encode.
    assert scores[("domain", "bits_per_byte")]["adapted"] < scores[("domain", "bits_per_byte")]["base"]
    assert len(report["after"]["generations"]) == 2
    metrics = read_metrics(out / "metrics.jsonl")
    assert [m["step"] for m in metrics if "train_loss" in m] == list(range(1, 13))
    assert (out / "adapter" / "adapter_config.json").is_file()
    # The learner sees the model summary once (it used to be logged and printed), and no bitsandbytes kernel notice.
    shown = _executed_text(out, "00_quickstart")
    assert shown.count("parameters trainable") == 1
    assert "gemm_4bit_forward" not in shown


QUALITY_REASONS_PREFIXES = ("gopher_", "fineweb_", "c4_")


def _check_corpus(out: Path) -> None:
    data = out / "data"
    for name in ("report.json", "funnel.png", "fertility.json", "heldout_domain.jsonl"):
        assert (data / name).is_file(), name
    report = json.loads((data / "report.json").read_text(encoding="utf-8"))
    for source, entry in [*report["sources"].items(), ("total", report["total"])]:
        assert entry["docs_in"] == entry["docs_kept"] + sum(entry["dropped"].values()), source
    # Each planted problem in the web scrape is caught by the stage meant for it; only the mojibake page stays.
    scrape = next(e for s, e in report["sources"].items() if s.endswith("web_scrape.jsonl"))
    dropped = scrape["dropped"]
    for reason in ("exact_duplicate", "near_duplicate", "wrong_language", "contaminated", "too_short"):
        assert dropped.get(reason) == 1, (reason, dropped)
    assert sum(n for r, n in dropped.items() if r.startswith(QUALITY_REASONS_PREFIXES)) == 2, dropped
    assert (scrape["docs_in"], scrape["docs_kept"]) == (8, 1)
    assert sum(report["decontamination"]["files_hit"].values()) == 1
    tokens = report["tokens"]
    assert tokens["tokens_in"] == tokens["tokens_packed"] + tokens["remainder_tokens"]
    assert tokens["tokens_packed"] == tokens["blocks"] * tokens["block_size"] == tokens["blocks"] * 64
    assert not tokens["replay_exhausted"] and abs(tokens["replay_share_achieved"] - 0.05) < 0.01
    assert {"domain", "replay"} <= set(report["fertility"])
    executed = (out / "01_corpus.ipynb").read_text(encoding="utf-8")
    assert "broken.jsonl:2: not valid JSON" in executed  # the raise-mode message, naming file and line
    assert "{'broken_json': 1, 'missing_text_field': 1}" in executed  # and skip mode's counts


def _check_forgetting(out: Path) -> None:
    for name in ("frontier.json", "frontier.md", "frontier.png", "export/README.md", "export/merged/config.json"):
        assert (out / name).is_file(), name
    payload = json.loads((out / "frontier.json").read_text(encoding="utf-8"))
    points = {p["name"]: p for p in payload["points"]}
    # SMOKE: replay 0% and 20% trained, the no-replay run interpolated at alpha 0.5 (evaluation only).
    assert list(points) == ["replay 0%", "replay 20%", "replay 0% · alpha 0.5"]
    assert [p["alpha"] for p in points.values()] == [1.0, 1.0, 0.5]
    for p in points.values():
        assert p["general_ci"][0] <= p["general_change"] <= p["general_ci"][1], p
        assert p["domain_ci"][0] <= p["domain_gain"] <= p["domain_ci"][1], p
    assert all(p["domain_gain"] > 0 for p in points.values())  # training on Vietnamese: Vietnamese got cheaper
    # Halfway back toward the base keeps part of the gain, not all of it: the interpolation moved the weights.
    assert points["replay 0% · alpha 0.5"]["domain_gain"] < points["replay 0%"]["domain_gain"]
    assert any(p["pareto"] for p in points.values()) and payload["max_general_regression"] == 0.01
    for share, achieved in ((0, 0.0), (20, 0.2)):
        run = out / f"replay{share}"
        assert (run / "metrics.jsonl").is_file() and (run / "adapter" / "adapter_config.json").is_file()  # LoRA recipe
        report = json.loads((run / "data" / "report.json").read_text(encoding="utf-8"))
        assert abs(report["tokens"]["replay_share_achieved"] - achieved) < 0.03
    chosen = payload["recommendation"]["chosen"]
    record = json.loads((out / "export" / "export.json").read_text(encoding="utf-8"))
    assert chosen in points and record["interpolation_alpha"] == points[chosen]["alpha"] and record["check"]["passed"]
    shown = _executed_text(out, "04_forgetting")
    for line in payload["verdict"]:
        assert line in shown


def _check_export(out: Path) -> None:
    export = out / "export"
    for name in ("README.md", "export.json", "recipe.yaml", "adapter/adapter_config.json", "merged/config.json",
                 "merged/model.safetensors"):
        assert (export / name).is_file(), name
    record = json.loads((export / "export.json").read_text(encoding="utf-8"))
    check = record["check"]
    assert check["passed"] and check["max_abs_diff"] <= check["tolerance"]
    assert check["adapter_effect_max_abs"] > 10 * check["max_abs_diff"]  # training moved logits far more than rounding
    assert record["dtype"] == "bf16" and set(record["merged"]["stored_dtypes"]) == {"BF16"}
    card = (export / "README.md").read_text(encoding="utf-8")
    for needle in ("## Training data", "## Decontamination", "bits_per_byte", "Passed."):
        assert needle in card, needle
    news = NOTEBOOK_DIR.parent / "data_samples" / "vi" / "news.jsonl"  # each data file listed with its bytes' hash
    assert f"`{hashlib.sha256(news.read_bytes()).hexdigest()}`" in card
    assert (out / "smoke_run" / "before_after.md").is_file()  # the evaluation the notebook measured for the card
    gguf = record["gguf"]  # section 8: f16 and q8_0 GGUFs of merged/, each read back and checked
    assert [g["type"] for g in gguf] == ["f16", "q8_0"] and all(g["passed"] for g in gguf)
    assert all(g["tokenizer"]["mismatched"] == 0 and g["tokenizer"]["documents"] > 0 for g in gguf)
    assert all(g["sha256"] in card for g in gguf) and (export / "gguf" / "Modelfile").is_file()


def _executed_text(out: Path, name: str) -> str:
    """Every output of the executed notebook, as one string (markdown tables included)."""
    texts = []
    for cell in nbformat.read(str(out / f"{name}.ipynb"), as_version=4).cells:
        for output in cell.get("outputs", []):
            texts += [output.get("text", ""), *(str(v) for v in output.get("data", {}).values())]
    return "\n".join(texts)


def _train_losses(metrics: Path) -> dict[int, float]:
    events = read_metrics(metrics)
    steps = [e["step"] for e in events if "train_loss" in e]
    assert len(steps) == len(set(steps)), f"{metrics}: a step logged twice"
    return {e["step"]: e["train_loss"] for e in events if "train_loss" in e}


def _check_train(out: Path) -> None:
    for name in ("recipe.yaml", "metrics.jsonl", "loss.png", "loss_whole_run.png", "adapter/adapter_config.json",
                 "data/report.json"):
        assert (out / name).is_file(), name
    recipe = Recipe.from_yaml(out / "recipe.yaml")  # the written recipe reruns this training from a terminal
    assert (recipe.model.name, recipe.train.max_steps, recipe.train.output_dir) == ("tiny-llama", 8, str(out))
    # One curve over two sessions: every step once, although steps 4-5 were trained before and after the disconnect.
    losses = _train_losses(out / "metrics.jsonl")
    assert sorted(losses) == list(range(1, 9)) and all(math.isfinite(v) for v in losses.values())
    executed = _executed_text(out, "02_train")
    assert "session lost during step 5" in executed
    assert "resumed from checkpoint-3: this session trained steps 4 to 8" in executed
    # The steps trained twice give the same losses: data order and random state were restored, not restarted.
    replayed = re.findall(r"^\| ([45]) \| [\d.,]+ \| [\d.,]+ \| ([\d.e+-]+) \|$", executed, flags=re.M)
    assert [step for step, _ in replayed] == ["4", "5"], replayed
    assert all(float(difference) < 1e-4 for _, difference in replayed), replayed


def _check_evaluate(out: Path) -> None:
    for name in ("base/results.json", "adapted/results.json", "comparison.md", "comparison.png", "comparison.json",
                 "cpt/adapter/adapter_config.json", "lm_eval_tasks/exams_vi_group.yaml"):
        assert (out / name).is_file(), name
    payload = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    rows = payload["comparison"]
    acc = {r["set"]: r for r in rows if r["kind"] == "task" and r["metric"] == "acc"}
    assert set(acc) == {"lambada_vi", "wikipediaqa_vi", "exams_vi", "comprehension_vi", "general_en"}
    # LIMIT = 3 in smoke mode: three items per task, three per exams_vi subject, the same for both models.
    assert {name: r["n"] for name, r in acc.items()} == {"lambada_vi": 3, "wikipediaqa_vi": 3, "exams_vi": 21,
                                                         "comprehension_vi": 3, "general_en": 3}
    assert len({r["subject"] for r in rows if r["kind"] == "subject"}) == 7
    for r in acc.values():
        assert r["ci_low"] <= r["delta"] <= r["ci_high"], r
    assert acc["general_en"]["role"] == "general" and acc["lambada_vi"]["role"] == "domain"
    bits = {r["set"]: r for r in rows if r["kind"] == "heldout" and r["metric"] == "bits_per_byte"}
    assert set(bits) == {"domain", "general"}
    assert bits["domain"]["adapted"] < bits["domain"]["base"]  # training on Vietnamese: Vietnamese got cheaper
    assert payload["retention"] and payload["adapted_meta"]["adapter"].endswith("adapter")
    base, adapted = (json.loads((out / f"{w}/results.json").read_text(encoding="utf-8")) for w in ("base", "adapted"))
    moved = [b["loglikelihoods"] != a["loglikelihoods"] for b, a in
             zip(base["tasks"]["wikipediaqa_vi"]["items"], adapted["tasks"]["wikipediaqa_vi"]["items"])]
    assert all(moved), "the adapter changed no log-likelihood: the adapted model is the base"


def _check_multi_gpu(out: Path) -> None:
    for name in ("loss.png", "2_processes/metrics.jsonl", "2_processes/launch.log", "1_process/metrics.jsonl"):
        assert (out / name).is_file(), name
    two, one = (_train_losses(out / run / "metrics.jsonl") for run in ("2_processes", "1_process"))
    assert sorted(two) == sorted(one) == list(range(1, 7))
    # Two processes x 2 blocks and one process x 2 accumulation see the same global batch: the same curve.
    assert max(abs(two[s] - one[s]) for s in two) < 1e-5
    assert "largest loss difference over 6 steps" in _executed_text(out, "06_multi_gpu")


def _check_vocabulary(out: Path) -> None:
    """Notebook 07: the extension, the init comparison and both runs."""
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


CHECKS = {
    "00_quickstart": ({}, _check_quickstart),
    "01_corpus": ({}, _check_corpus),
    "02_train": ({}, _check_train),
    "03_evaluate": ({}, _check_evaluate),
    "04_forgetting": ({}, _check_forgetting),
    "05_export": ({}, _check_export),
    "06_multi_gpu": ({}, _check_multi_gpu),
    "07_vocabulary": ({}, _check_vocabulary),
}


@pytest.mark.slow
@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_notebook_runs_headless_in_smoke_mode(path, tmp_path):
    params, check = CHECKS.get(path.stem, ({}, None))
    executed = run_notebook(str(path), tmp_path, {"SMOKE": True, **params}, timeout_s=600)
    assert executed.is_file()
    errors = [o for c in nbformat.read(str(executed), as_version=4).cells for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert errors == []
    assert any(p != executed for p in tmp_path.iterdir()), "the notebook wrote nothing to OUT_DIR"
    if check is not None:
        check(tmp_path)
