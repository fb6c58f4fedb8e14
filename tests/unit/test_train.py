import math
import shutil
import time

import pytest
import torch
from _helpers import EventCollector

from cptnb.config import TrainConfig
from cptnb.data import pack_documents
from cptnb.errors import TrainingDivergedError
from cptnb.train import trainer as trainer_module
from cptnb.train.schedules import lr_multiplier
from cptnb.train.trainer import param_groups, train


@pytest.fixture(scope="module")
def blocks(tiny, vi_docs):
    loaded = tiny(method="full")
    return pack_documents(vi_docs[:40], loaded.tokenizer, 64).dataset


def test_lora_run_lowers_loss_logs_events_and_saves_adapter(tiny, blocks, tmp_path):
    loaded = tiny(method="lora", train_embeddings=True)
    events = EventCollector()

    cfg = TrainConfig(output_dir=str(tmp_path), max_steps=10, per_device_batch_size=4, learning_rate=5e-3, warmup_steps=2, eval_steps=4)
    started = time.monotonic()
    result = train(loaded, blocks, cfg, eval_datasets={"domain": blocks.select(range(4))}, logger=events)
    wall = time.monotonic() - started
    losses = [e["train_loss"] for e in events if "train_loss" in e]
    assert result.steps == 10 and len(losses) == 10
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert all(math.isfinite(x) for x in losses)
    last_train = [e for e in events if "train_loss" in e][-1]
    assert {"learning_rate", "grad_norm", "tokens_per_second", "eta_seconds", "memory_mb"} <= set(last_train)
    # Seconds inside optimizer steps add up step by step, and stay under the call's wall time (evaluation excluded).
    step_seconds = [e["train_step_seconds"] for e in events if "train_loss" in e]
    assert all(0 < a < b for a, b in zip(step_seconds, step_seconds[1:])) and step_seconds[-1] < wall
    # Every 4 steps, and once more at the last step (10 is no multiple of 4): each point logged once.
    assert [e["step"] for e in events if "heldout_domain_loss" in e] == [4, 8, 10]
    assert (result.final_dir / "adapter_config.json").is_file()
    assert (result.final_dir / "tokenizer.json").is_file()


def test_full_run_saves_a_model_that_reloads_with_plain_transformers(tiny, blocks, tmp_path):
    from transformers import AutoModelForCausalLM

    loaded = tiny(method="full")
    result = train(loaded, blocks, TrainConfig(output_dir=str(tmp_path), max_steps=3, learning_rate=1e-3))
    reloaded = AutoModelForCausalLM.from_pretrained(result.final_dir)
    ids = torch.tensor([blocks[0]["input_ids"][:16]])
    loaded.model.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, loaded.model(ids).logits, atol=1e-5)


def test_nan_loss_stops_with_step_and_checkpoint(tiny, blocks, tmp_path):
    loaded = tiny(method="lora")
    with torch.no_grad():
        for name, p in loaded.model.named_parameters():
            if "lora_B" in name:
                p.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match=r"became nan at step 1\. Last good checkpoint: none saved yet"):
        train(loaded, blocks, TrainConfig(output_dir=str(tmp_path), max_steps=3))


def test_resume_continues_from_the_checkpoint_weights_and_step(tiny, blocks, tmp_path):
    cfg = TrainConfig(output_dir=str(tmp_path), max_steps=4, per_device_batch_size=2, learning_rate=5e-3, save_steps=2)
    full = train(tiny(method="lora"), blocks, cfg)
    shutil.rmtree(tmp_path / "checkpoint-4")
    fresh = tiny(method="lora")  # a new process would start from the initial weights again
    resumed = train(fresh, blocks, cfg, resume="auto")
    assert (full.resumed_from_step, resumed.resumed_from_step) == (0, 2)
    assert [e["step"] for e in resumed.history if "train_loss" in e] == [3, 4]
    later = {e["step"]: e["train_loss"] for e in full.history if "train_loss" in e and e["step"] > 2}
    resumed_losses = [e["train_loss"] for e in resumed.history if "train_loss" in e]
    assert resumed_losses == pytest.approx([later[3], later[4]], abs=1e-4)


def test_a_real_run_follows_the_schedule_and_the_embedding_rate(tiny, blocks, tmp_path, monkeypatch):
    """The trainer uses the kit's optimizer groups and schedule, not transformers' defaults (which share one rate)."""
    from transformers import TrainerCallback

    seen = []  # per optimizer step: (lr of each group, ids of its tensors, weight decay of each group, fused flag)

    class Spy(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kw):
            groups = optimizer.param_groups
            seen.append(([g["lr"] for g in groups], [{id(p) for p in g["params"]} for g in groups],
                         [g["weight_decay"] for g in groups], optimizer.optimizer.defaults.get("fused")))

    kit_callbacks = trainer_module._callbacks
    monkeypatch.setattr(trainer_module, "_callbacks", lambda *a: kit_callbacks(*a) + [Spy()])
    loaded = tiny(method="lora", train_embeddings=True)
    events = EventCollector()

    steps, warmup, floor, peak, embedding = 6, 2, 0.2, 1e-2, 3e-3
    cfg = TrainConfig(output_dir=str(tmp_path), max_steps=steps, per_device_batch_size=2, learning_rate=peak,
                      embedding_learning_rate=embedding, warmup_steps=warmup, min_lr_ratio=floor, lr_scheduler="cosine",
                      weight_decay=0.05, optimizer="adamw_torch_fused")
    train(loaded, blocks, cfg, logger=events)
    expected = [lr_multiplier(s, steps, warmup, "cosine", floor) for s in range(steps)]  # step s is 0-based
    logged = [e["learning_rate"] for e in events if "train_loss" in e]
    assert logged == pytest.approx([peak * m for m in expected], rel=1e-9)  # the rate step s+1 trained with
    assert len(seen) == steps
    for (lrs, _, _, _), m in zip(seen, expected):
        assert lrs == pytest.approx([peak * m, embedding * m], rel=1e-9)
    trainable = {n: id(p) for n, p in loaded.model.named_parameters() if p.requires_grad}
    embedding_ids = {i for n, i in trainable.items() if "embed_tokens" in n or "lm_head" in n}
    assert embedding_ids  # train_embeddings really made embeddings trainable
    _, ids, decay, fused = seen[0]
    assert ids == [set(trainable.values()) - embedding_ids, embedding_ids]  # every trainable tensor, once
    assert decay == [0.05, 0.05]
    assert fused is True  # train.optimizer reaches the optimizer: adamw_torch_fused builds a fused AdamW


def test_embeddings_get_their_own_learning_rate(tiny):
    loaded = tiny(method="lora", train_embeddings=True)
    groups = param_groups(loaded.model, TrainConfig(learning_rate=1e-3))
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-4)]
    embedding_ids = {id(p) for n, p in loaded.model.named_parameters() if "embed_tokens" in n and p.requires_grad}
    assert {id(p) for p in groups[1]["params"]} == embedding_ids


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_schedule_warms_up_then_decays_to_the_floor(kind):
    total, warmup, floor = 100, 10, 0.1
    curve = [lr_multiplier(s, total, warmup, kind, floor) for s in range(total + 1)]
    assert curve[:warmup] == pytest.approx([(s + 1) / warmup for s in range(warmup)])
    assert curve[warmup] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(curve[warmup:], curve[warmup + 1 :]))  # never rises after warmup
    assert curve[total] == pytest.approx(floor)
    mid = curve[warmup + 45]
    assert mid == pytest.approx(floor + (1 - floor) * 0.5, abs=1e-9)  # both shapes cross the midpoint halfway


def test_constant_schedule_after_warmup():
    assert [lr_multiplier(s, 10, 2, "constant") for s in range(5)] == [0.5, 1.0, 1.0, 1.0, 1.0]
