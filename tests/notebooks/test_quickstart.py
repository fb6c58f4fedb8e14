"""The quickstart executed headless in smoke mode, and the committed notebooks' hygiene."""

import json
import math

import pytest

from cptnb.notebooks import NOTEBOOK_DIR, outputs_of, run_notebook

NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_have_no_outputs(path):
    assert outputs_of(path) == []
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    assert all(c.get("execution_count") is None for c in cells if c["cell_type"] == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_structure(path):
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    first = "".join(cells[0]["source"])
    assert cells[0]["cell_type"] == "markdown" and first.startswith("# ")
    assert "\n> " in first  # the outcome-and-time blockquote
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and "SMOKE" in "".join(tagged[0]["source"])


@pytest.mark.notebook
def test_quickstart_runs_headless_in_smoke_mode(tmp_path):
    executed = run_notebook("00_quickstart", tmp_path, {"SMOKE": True})
    assert executed.is_file()
    for name in ("metrics.jsonl", "loss.png", "before_after.md", "before_after.json", "before_after.png"):
        assert (tmp_path / name).is_file(), name
    report = json.loads((tmp_path / "before_after.json").read_text(encoding="utf-8"))
    scores = {(r["set"], r["metric"]): r for r in report["comparison"]}
    for row in report["comparison"]:
        assert math.isfinite(row["base"]) and math.isfinite(row["adapted"])
    # Training on Vietnamese must make held-out Vietnamese cheaper to encode.
    assert scores[("domain", "bits_per_byte")]["adapted"] < scores[("domain", "bits_per_byte")]["base"]
    assert len(report["after"]["generations"]) == 2
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "train_loss" in m] == list(range(1, 13))
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
