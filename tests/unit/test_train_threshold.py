"""The declared retention threshold during training: it warns, or stops and rolls back to the best checkpoint.

The "general" held-out set here is blocks of one token that never occurs in the training blocks: every step on the
Vietnamese blocks pushes its logit down (its output row only ever gets the softmax's negative gradient), so their
loss rises step after step (+1.3% after one step, +9% after five), the regression the threshold is there to catch.
"""

from __future__ import annotations

import logging

import pytest
import torch
from _helpers import EventCollector
from datasets import Dataset
from safetensors.torch import load_file

from cptnb.config import Recipe, TrainConfig
from cptnb.data import pack_documents
from cptnb.errors import ConfigError
from cptnb.retention import RetentionThreshold
from cptnb.train.report import write_run_report
from cptnb.train.trainer import train
from cptnb.train.watch import TrainingWatch

STEPS = 5
LIMIT = 0.04  # crossed after a few steps
ADAPTER = "adapter_model.safetensors"


@pytest.fixture(scope="module")
def data(tiny, vi_docs):
    tokenizer = tiny(method="lora").tokenizer
    blocks = pack_documents(vi_docs[:40], tokenizer, 64).dataset
    seen = {i for block in blocks["input_ids"] for i in block}
    unseen = next(i for i in range(len(tokenizer) - 1, 0, -1) if i not in seen)
    general = Dataset.from_dict({"input_ids": [[unseen] * 64] * 2})
    return blocks, {"domain": blocks.select(range(4)), "general": general}


def _run(tiny, data, out, **train_fields):
    blocks, eval_sets = data
    loaded = tiny(method="lora", train_embeddings=True)
    recipe = Recipe().replace(train={
        "output_dir": str(out), "max_steps": STEPS, "eval_steps": 1, "per_device_batch_size": 4,
        "learning_rate": 2e-2, "warmup_steps": 0, "task_eval_limit": 0, **train_fields})
    watch = TrainingWatch.from_recipe(recipe, loaded.tokenizer)
    events = EventCollector()

    result = train(loaded, blocks, recipe.train, eval_datasets=eval_sets, logger=events, watch=watch)
    return result, {e["step"]: e for e in events if "general_bpb_rise" in e}


@pytest.fixture(scope="module")
def warned(tiny, data, tmp_path_factory):
    return _run(tiny, data, tmp_path_factory.mktemp("warn"), max_general_bpb_rise=LIMIT, on_regression="warn")


@pytest.mark.slow  # short tiny-llama runs with an evaluation at every step
def test_the_threshold_warns_when_crossed_and_training_goes_on(warned, caplog):
    result, events = warned
    rises = [events[s]["general_bpb_rise"] for s in range(STEPS + 1)]
    assert rises[0] == 0 and all(a < b for a, b in zip(rises, rises[1:]))  # the unseen token's loss rises every step
    assert result.steps == STEPS  # warn: training went on
    crossed = [s for s in events if events[s]["retention"] == "crossed"]
    assert 1 < crossed[0] and crossed == list(range(crossed[0], STEPS + 1))
    assert all(rises[s] > LIMIT for s in crossed) and all(rises[s] <= LIMIT for s in range(crossed[0]))
    assert result.watch["first_crossed_step"] == crossed[0] and result.watch["stopped_at_step"] is None
    assert "held-out general bits per byte" in events[crossed[0]]["retention_crossed"][0]
    assert events[1]["retention_general_loss_limit"] == pytest.approx(
        result.watch["baseline"]["heldout_general_loss"] * (1 + LIMIT))


@pytest.mark.slow  # short tiny-llama runs with an evaluation at every step
def test_the_warning_is_logged(tiny, data, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="cptnb.train.watch"):
        _run(tiny, data, tmp_path, max_steps=1, max_general_bpb_rise=1e-9)
    assert "beyond the retention threshold" in caplog.text and "training goes on" in caplog.text


@pytest.mark.slow  # short tiny-llama runs with an evaluation at every step
def test_stop_ends_training_and_keeps_the_best_checkpoint_within_the_threshold(warned, tiny, data, tmp_path):
    _, reference = warned
    rises = [reference[s]["general_bpb_rise"] for s in range(STEPS + 1)]
    limit = (rises[2] + rises[3]) / 2  # the same run crosses it at step 3, after two steps within it
    result, events = _run(tiny, data, tmp_path, max_general_bpb_rise=limit, on_regression="stop", save_steps=1,
                          save_total_limit=1)
    assert [events[s]["retention"] for s in sorted(events)] == ["ok", "ok", "ok", "crossed"]
    assert result.steps == 3 and result.watch["stopped_at_step"] == 3
    assert result.watch["best_step"] == 2 and result.watch["final_model_step"] == 2
    # Rotation (save_total_limit 1) kept the best checkpoint, and the final adapter holds its weights.
    assert (tmp_path / "checkpoint-2").is_dir()
    best, final = load_file(tmp_path / "checkpoint-2" / ADAPTER), load_file(result.final_dir / ADAPTER)
    assert best.keys() == final.keys()
    assert all(torch.equal(best[k], final[k]) for k in best)
    stopped = load_file(tmp_path / "checkpoint-3" / ADAPTER) if (tmp_path / "checkpoint-3").is_dir() else None
    if stopped is not None:  # the step that crossed differs from what was kept
        assert any(not torch.equal(best[k], stopped[k]) for k in best)
    report = write_run_report(tmp_path, list(events.values()), result.watch).read_text(encoding="utf-8")
    assert "Crossed at step 3" in report and "the final model is checkpoint-2" in report


@pytest.mark.slow  # short tiny-llama runs with an evaluation at every step
def test_stop_without_a_checkpoint_within_the_threshold_says_so(tiny, data, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        result, _ = _run(tiny, data, tmp_path, max_steps=2, max_general_bpb_rise=1e-9, on_regression="stop",
                         save_steps=1)
    assert result.steps == 1 and result.watch["final_model_step"] == 1
    assert "no checkpoint within the retention threshold" in caplog.text


def test_threshold_settings_are_checked_with_the_fix():
    with pytest.raises(ConfigError, match="save_steps to a multiple of eval_steps"):
        TrainConfig(eval_steps=4, save_steps=6, max_general_bpb_rise=0.02, on_regression="stop")
    with pytest.raises(ConfigError, match="on_regression 'stop' checks the threshold at evaluation steps"):
        TrainConfig(eval_steps=0, max_general_bpb_rise=0.02, on_regression="stop")
    with pytest.raises(ConfigError, match="set task_eval_limit > 0"):
        TrainConfig(task_eval_limit=0, max_general_task_drop=0.05)
    with pytest.raises(ConfigError, match="on_regression must be one of warn, stop"):
        TrainConfig(on_regression="rollback")
    with pytest.raises(ConfigError, match=r"max_general_bpb_rise must be a share in \[0, 1\)"):
        TrainConfig(max_general_bpb_rise=2)
    TrainConfig(eval_steps=4, save_steps=8, max_general_bpb_rise=0.02, on_regression="stop")  # fine
    TrainConfig(max_general_bpb_rise=0.02)  # warn without eval steps: checked by `cptnb compare` only


def test_threshold_crossed_names_each_measure_beyond_it():
    both = RetentionThreshold(max_general_bpb_rise=0.02, max_general_task_drop=0.05)
    assert both.crossed(0.019, -0.05) == []
    assert both.crossed(0.021, None) == ["held-out general bits per byte +2.1% (limit +2.0%)"]
    assert both.crossed(None, -0.06) == ["general-task accuracy -6.0 points (limit -5.0)"]
    assert len(both.crossed(0.03, -0.1)) == 2
    assert RetentionThreshold().crossed(1.0, -1.0) == [] and not RetentionThreshold().declared


def test_task_accuracy_drop_is_judged_against_the_base():
    watch = TrainingWatch(threshold=RetentionThreshold(max_general_task_drop=0.05))
    assert watch.check({"general_task_acc": 0.60})["retention"] == "ok"  # the first values are the base
    assert watch.check({"general_task_acc": 0.56})["retention"] == "ok"
    late = watch.check({"general_task_acc": 0.50})
    assert late["retention"] == "crossed" and late["general_task_acc_change"] == pytest.approx(-0.10)
    resumed = TrainingWatch(threshold=watch.threshold).with_baseline_from(
        [{"step": 4, "general_task_acc": 0.2}, {"step": 0, "general_task_acc": 0.6, "heldout_general_loss": 2.0}])
    assert resumed.baseline == {"general_task_acc": 0.6, "heldout_general_loss": 2.0}
