"""Shipped architecture shapes, resolving a hub id offline without waiting on the Hub, and the rehearsal."""

import json
import logging
import time
from collections import Counter

import pytest
import torch

from cptnb.config import ModelConfig, Recipe
from cptnb.errors import ModelNotAvailableError
from cptnb.models import hub
from cptnb.paths import REPO_ROOT
from cptnb.planner import Hardware, activation_bytes, estimate_memory, model_shape
from cptnb.planner import known_shapes as ks
from cptnb.planner.shape import shape_from_config

SEED_RECIPE = REPO_ROOT / "data_samples" / "recipes" / "llama32_1b_vi_full_8gpu.yaml"
CLOSED_PORT = "http://127.0.0.1:9"  # discard port: nothing listens, so a connection is refused at once


@pytest.fixture
def no_hub(monkeypatch):
    """A machine whose Hub cannot be reached, HF_HUB_OFFLINE unset (the README's way of running)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", CLOSED_PORT)
    monkeypatch.setattr(hub, "_answers", {})
    monkeypatch.setattr(ks, "_said", set())
    from transformers import AutoModelForCausalLM, LlamaConfig  # noqa: F401  (import time is not hub time)


def _published(text: str) -> float:
    return float(text[:-1]) * {"M": 1e6, "B": 1e9}[text[-1]]


def test_every_shipped_shape_builds_to_the_size_its_model_card_states():
    shapes = {s.path.name: s for s in ks.known_shapes().values()}
    assert len(shapes) >= 12
    for name, shape in shapes.items():
        raw = json.loads(shape.path.read_text())
        assert raw["source"].startswith("https://huggingface.co/"), name
        counted = shape_from_config(shape.to_config(), shape.name).total_params
        assert counted == pytest.approx(_published(shape.published_params), rel=0.02), name
    llama = shape_from_config(ks.known_shape("meta-llama/Llama-3.2-1B").to_config(), "llama")
    assert (llama.total_params, llama.vocab_size, llama.num_kv_heads, llama.tie_word_embeddings) == (
        1_235_814_400, 128_256, 8, True)
    assert ks.known_shape("META-LLAMA/llama-3.2-1b-instruct").name == "Llama-3.2-1B"


def test_a_hub_id_resolves_to_its_shipped_shape_at_once_and_says_so_once(no_hub, caplog):
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    shape = model_shape(ModelConfig(name="meta-llama/Llama-3.2-1B"))
    assert time.monotonic() - started < 8  # huggingface_hub's retries alone take ~30 s
    assert shape.total_params == 1_235_814_400 and shape.vocab_size == 128_256
    model_shape(ModelConfig(name="meta-llama/Llama-3.2-1B"))
    said = [r.getMessage() for r in caplog.records if "llama-3.2-1b.json" in r.getMessage()]
    assert len(said) == 1
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "Retrying" in m]
    assert all(n == 1 for n in Counter(messages).values())


def test_an_unknown_hub_id_fails_at_once_with_the_clear_message(no_hub):
    started = time.monotonic()
    with pytest.raises(ModelNotAvailableError, match="hf download someone/no-such-model"):
        model_shape(ModelConfig(name="someone/no-such-model"))
    assert time.monotonic() - started < 8


def test_the_unsloth_path_fails_at_once_offline_for_a_model_not_cached(no_hub, monkeypatch, tmp_path):
    import sys
    import types

    from cptnb.models import loading

    def asked(*args, **kwargs):
        raise AssertionError("Unsloth was asked to fetch the model")

    fake = types.ModuleType("unsloth")
    fake.FastLanguageModel = types.SimpleNamespace(from_pretrained=asked)
    monkeypatch.setitem(sys.modules, "unsloth", fake)
    monkeypatch.setattr(loading, "choose_backend", lambda cfg: "unsloth")  # as on a GPU machine
    started = time.monotonic()
    with pytest.raises(ModelNotAvailableError, match="hf download someone/no-such-model"):
        loading.load_model(ModelConfig(name="someone/no-such-model", backend="unsloth"))
    assert time.monotonic() - started < 8
    assert not loading.unreachable_and_not_cached(str(tmp_path))  # a local folder is never a Hub question


def test_hf_hub_offline_answers_without_trying(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("no connection should be tried under HF_HUB_OFFLINE=1")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub.socket, "create_connection", refuse)
    assert hub.hub_reachable() is False


def test_cli_plans_the_seed_recipe_offline(no_hub, capsys, caplog):
    from cptnb.cli import main

    rc = main(["plan", "--config", str(SEED_RECIPE), "--device", "cuda", "--num-devices", "8",
               "--available-gib", "80"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "1,235,814,400" in out and "| **full** (chosen) |" in out
    messages = [r.getMessage() for r in caplog.records]
    assert all(n == 1 for n in Counter(messages).values())


# --- the planner against a random-weight model of a shipped shape ----------------------------------------


def _measure(config, batch: int, seq: int) -> dict[str, float]:
    """Bytes of weights, gradients, AdamW state and saved activations of a random-weight fp32 model on the CPU."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).float().train()
    params = list({id(p): p for p in model.parameters()}.values())
    ptrs = {p.untyped_storage().data_ptr() for p in params}
    storages: dict[int, int] = {}

    def keep(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    ids = torch.randint(0, config.vocab_size, (batch, seq))
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in params)
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    optimizer.step()
    state = sum(t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if t.dim())
    return {"weights": sum(p.numel() * p.element_size() for p in params), "gradients": grads,
            "optimizer": state, "activations": sum(n for ptr, n in storages.items() if ptr not in ptrs)}


def _agreement(hub_id: str, batch: int = 1, seq: int = 64) -> None:
    recipe = Recipe().replace(
        model={"name": hub_id, "method": "full", "max_seq_len_tokens": seq, "dtype": "fp32"},
        train={"per_device_batch_size": batch, "gradient_checkpointing": False, "precision": "fp32",
               "optimizer": "adamw_torch"})
    shape = model_shape(recipe.model)
    est = estimate_memory(shape, recipe, hardware=Hardware("cpu", 1, "fp32", 4), strategy="single", shape=shape)
    saved, _, _ = activation_bytes(shape, recipe.model, "full", batch, seq, 4, False)
    estimated = {"weights": est.weights_bytes, "gradients": est.gradients_bytes, "optimizer": est.optimizer_bytes,
                 # what autograd keeps: the layers' tensors, plus the fp32 log-softmax cross-entropy saves
                 "activations": saved + 4 * batch * seq * shape.vocab_size}
    measured = _measure(ks.known_shape(hub_id).to_config(), batch, seq)
    for part, value in estimated.items():
        assert value == pytest.approx(measured[part], rel=0.10), part
    assert sum(estimated.values()) == pytest.approx(sum(measured.values()), rel=0.10)


@pytest.mark.slow
def test_memory_estimate_of_smollm2_135m_matches_a_random_weight_model(no_hub):
    _agreement("HuggingFaceTB/SmolLM2-135M")


@pytest.mark.slow
def test_memory_estimate_of_qwen25_05b_matches_a_random_weight_model(no_hub):
    _agreement("Qwen/Qwen2.5-0.5B")  # another family (q/k/v biases), 494M parameters: ~8 GB of RAM


# --- the rehearsal ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_rehearsal_of_a_shipped_shape_shrinks_trains_checkpoints_and_resumes(no_hub, tmp_path):
    from cptnb.planner.rehearse import rehearse

    recipe = Recipe.from_yaml(SEED_RECIPE).replace(model={"name": "HuggingFaceTB/SmolLM2-135M"},
                                                   train={"gradient_checkpointing": False})
    result = rehearse(recipe, steps=2, memory_budget_bytes=0.6 * 2**30, block_tokens=64, output_dir=tmp_path)
    assert result.shape_origin == "shipped shape smollm2-135m.json"
    assert result.params_recipe == 134_515_008 and result.params_rehearsed < result.params_recipe
    assert any(c.startswith("layers: 30 -> ") for c in result.changes)
    assert any(c.startswith("tokenizer: ") for c in result.changes)
    assert result.steps == 2 and result.resumed_from_step == 1 and len(result.resumed_losses) == 1
    assert result.resume_gap < 1e-3 and not result.warnings
    assert (tmp_path / "run" / "checkpoint-1").is_dir() and (tmp_path / "run" / "model").is_dir()


@pytest.mark.slow
def test_rehearsal_of_the_seed_recipe_finishes_in_three_minutes(no_hub):
    from cptnb.planner.rehearse import rehearse

    result = rehearse(Recipe.from_yaml(SEED_RECIPE))
    assert result.params_recipe == 1_235_814_400
    assert result.seconds < 180 and result.resume_gap < 1e-3 and not result.warnings
