"""Task scores and generations during training (cptnb.train.watch): the same numbers as `cptnb evaluate`.

One short LoRA run on tiny-llama, evaluated at steps 0, 2 and 4 with two tasks (a 5-shot general one and a
0-shot domain one) and one prompt, checkpoints at 2 and 4, TensorBoard on; the tests read what it wrote.
"""

from __future__ import annotations

import json

import pytest

from cptnb.cli import main
from cptnb.config import Recipe
from cptnb.data import pack_documents, read_documents
from cptnb.paths import data_samples_dir
from cptnb.train.monitor import JsonlLogger, LivePlot, MultiLogger, draw_metrics, read_metrics
from cptnb.train.report import write_run_report
from cptnb.train.trainer import train
from cptnb.train.watch import TrainingWatch

TASKS = ["general_en", "lambada_vi"]
LIMIT = 2


@pytest.fixture(scope="module")
def watched(tiny, vi_docs, tmp_path_factory):
    out = tmp_path_factory.mktemp("watched")
    loaded = tiny(method="lora", train_embeddings=True)
    blocks = pack_documents(vi_docs[:40], loaded.tokenizer, 64).dataset
    english = pack_documents(list(read_documents([data_samples_dir() / "en"]))[:8], loaded.tokenizer, 64).dataset
    recipe = Recipe().replace(
        train={"output_dir": str(out), "max_steps": 4, "eval_steps": 2, "save_steps": 2, "save_total_limit": 3,
               "per_device_batch_size": 4, "learning_rate": 2e-2, "warmup_steps": 0, "task_eval_limit": LIMIT,
               "task_eval_names": TASKS, "report_to": ["tensorboard"]},
        eval={"prompts": ["Hà Nội là"], "max_new_tokens": 4},
    )
    watch = TrainingWatch.from_recipe(recipe, loaded.tokenizer)
    logger = MultiLogger([JsonlLogger(out / "metrics.jsonl"), LivePlot(png_path=out / "loss.png")])
    result = train(loaded, blocks, recipe.train, logger=logger, watch=watch,
                   eval_datasets={"domain": blocks.select(range(4)), "general": english.select(range(2))})
    logger.close()
    write_run_report(out, read_metrics(out / "metrics.jsonl"), result.watch)
    return out, result


def _watch_events(out):
    return {e["step"]: e for e in read_metrics(out / "metrics.jsonl") if "general_task_acc" in e}


def _evaluate(tmp_path, name, adapter=None):
    args = ["evaluate", "--model", "tiny-llama", "--out", str(tmp_path / name), "--eval.limit", str(LIMIT)]
    args += [a for t in TASKS for a in ("--task", t)] + (["--adapter", str(adapter)] if adapter else [])
    assert main(args) == 0
    return json.loads((tmp_path / name / "results.json").read_text(encoding="utf-8"))["tasks"]


@pytest.mark.slow  # shares one tiny-llama run scored at three steps
def test_task_scores_during_training_equal_cptnb_evaluate_on_the_same_checkpoint(watched, tmp_path):
    out, result = watched
    events = _watch_events(out)
    assert sorted(events) == [0, 2, 4]  # the base, then every eval step
    for step, adapter in ((0, None), (2, out / "checkpoint-2"), (4, result.final_dir)):
        scored = _evaluate(tmp_path, f"step{step}", adapter)
        for task in TASKS:
            assert scored[task]["n"] == LIMIT
            for metric, value in scored[task]["metrics"].items():
                assert events[step][f"task_{task}_{metric}"] == pytest.approx(value, rel=1e-6, abs=1e-9), \
                    (step, task, metric)
    # Training moved the model, so the numbers compared above are not all one constant.
    assert events[4]["task_lambada_vi_perplexity"] != pytest.approx(events[0]["task_lambada_vi_perplexity"], rel=1e-3)
    assert events[0]["general_task_acc"] == events[0]["task_general_en_acc"]
    assert events[0]["domain_task_acc"] == events[0]["task_lambada_vi_acc"]


@pytest.mark.slow  # shares one tiny-llama run scored at three steps
def test_generations_and_held_out_change_are_in_metrics_jsonl(watched):
    out, result = watched
    events = _watch_events(out)
    for step in (0, 2, 4):
        (gen,) = events[step]["generations"]
        assert gen["prompt"] == "Hà Nội là" and isinstance(gen["output"], str)
        assert events[step]["task_eval_seconds"] > 0 and events[step]["generation_seconds"] > 0
    heldout = {e["step"]: e["heldout_general_loss"] for e in read_metrics(out / "metrics.jsonl")
               if "heldout_general_loss" in e}
    assert sorted(heldout) == [0, 2, 4]
    assert events[0]["general_bpb_rise"] == 0
    assert events[4]["general_bpb_rise"] == pytest.approx(heldout[4] / heldout[0] - 1)
    assert result.watch["evaluations"] == 3 and result.watch["tasks"] == {t: LIMIT for t in TASKS}
    assert result.watch["baseline"]["heldout_general_loss"] == pytest.approx(heldout[0])
    assert 0 < result.watch["overhead_share"] and result.watch["training_seconds"] < result.watch["train_seconds"]


@pytest.mark.slow  # shares one tiny-llama run scored at three steps
def test_run_report_and_live_panel_show_the_task_scores(watched):
    out, result = watched
    report = (out / "train_report.md").read_text(encoding="utf-8")
    assert "## Evaluations during training" in report and "general_en acc" in report
    rows = [line for line in report.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert [int(r.split("|")[1]) for r in rows] == [0, 2, 4]
    assert "- step 4: " in report and "overhead" in report
    payload = json.loads((out / "train_report.json").read_text(encoding="utf-8"))
    assert [r["step"] for r in payload["evaluations"]] == [0, 2, 4]
    assert payload["watch"]["overhead_share"] == pytest.approx(result.watch["overhead_share"])
    series = {"domain_task_acc": [(0, 0.5), (2, 0.5)], "general_task_acc": [(0, 0.5), (2, 0.0)],
              "train_loss": [(1, 3.0), (2, 2.5)]}
    fig = draw_metrics(series)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert any("task accuracy" in t for t in titles)
    task_ax = next(ax for ax in fig.axes if "task accuracy" in ax.get_title())
    assert [line.get_label() for line in task_ax.get_lines()] == ["domain tasks", "general tasks (retention)"]
    assert (out / "loss.png").stat().st_size > 10_000


@pytest.mark.slow  # shares one tiny-llama run scored at three steps
def test_tensorboard_reads_back_the_metrics_jsonl_events(watched):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = watched
    (logdir,) = {p.parent for p in (out / "tensorboard").rglob("events.out.tfevents.*")}
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    metrics = read_metrics(out / "metrics.jsonl")

    def logged(key):
        return [(e["step"], e[key]) for e in metrics if isinstance(e.get(key), (int, float))]

    for tag, key in (("train/loss", "train_loss"), ("train/learning_rate", "learning_rate"),
                     ("eval/heldout_domain_loss", "heldout_domain_loss"),
                     ("eval/heldout_general_loss", "heldout_general_loss"),
                     ("eval/task_general_en_acc", "task_general_en_acc"),
                     ("eval/task_lambada_vi_perplexity", "task_lambada_vi_perplexity"),
                     ("eval/general_bpb_rise", "general_bpb_rise")):
        expected = logged(key)
        assert expected, key
        got = [(s.step, s.value) for s in events.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in expected], tag
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6, abs=1e-7), tag
    assert "eval/generation_0/text_summary" in events.Tags()["tensors"]
