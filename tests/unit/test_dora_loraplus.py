"""DoRA (model.use_dora) and LoRA+ (model.loraplus_lr_ratio): recipe fields, CLI, trainable check, optimizer, export."""

import argparse
import json

import pytest
import torch

from cptnb.cli_options import add_recipe_options, recipe_from_args
from cptnb.config import ModelConfig, TrainConfig
from cptnb.data import pack_documents
from cptnb.errors import ConfigError, CptnbError
from cptnb.export import export_adapter
from cptnb.models.loading import assert_trainable
from cptnb.train import trainer as trainer_module
from cptnb.train.trainer import loraplus_optimizer, train


@pytest.fixture(scope="module")
def dora(tiny):
    return tiny(method="lora", use_dora=True, loraplus_lr_ratio=8, train_embeddings=True)


def test_fields_are_checked_and_reach_the_cli():
    parser = argparse.ArgumentParser()
    add_recipe_options(parser)
    args = parser.parse_args(["--model.use_dora", "true", "--model.loraplus_lr_ratio", "16"])
    recipe = recipe_from_args(args)
    assert recipe.model.use_dora is True and recipe.model.loraplus_lr_ratio == 16
    with pytest.raises(ConfigError, match="loraplus_lr_ratio must be 0"):
        ModelConfig(loraplus_lr_ratio=0.5)
    with pytest.raises(ConfigError, match="set method to lora or qlora"):
        ModelConfig(method="full", use_dora=True)


def test_dora_trains_a_magnitude_per_adapted_layer_and_the_check_tells_dora_from_lora(tiny, dora):
    names = dora.trainable_names
    adapted = {n.split(".lora_A.")[0] for n in names if ".lora_A." in n}
    magnitudes = {n.split(".lora_magnitude_vector")[0] for n in names if "lora_magnitude_vector" in n}
    assert adapted and magnitudes == adapted
    plain = tiny(method="lora")
    with pytest.raises(CptnbError, match="use_dora=True but"):
        assert_trainable(plain.model, ModelConfig(name="tiny-llama", use_dora=True))
    with pytest.raises(CptnbError, match="use_dora=False but"):
        assert_trainable(dora.model, ModelConfig(name="tiny-llama", train_embeddings=True))


def test_loraplus_groups_b_at_ratio_a_at_lr_and_embeddings_at_their_own_rate(dora):
    loaded = dora
    cfg = TrainConfig(learning_rate=1e-3, embedding_learning_rate=5e-5, weight_decay=0.01)
    optimizer = loraplus_optimizer(loaded.model, cfg, 16, torch.optim.AdamW, {})
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    named = [(n, p) for n, p in loaded.model.named_parameters() if p.requires_grad]
    assert len(lr_of) == len(named)  # every trainable tensor in exactly one group
    for name, param in named:
        if "lora_B" in name or "lora_magnitude_vector" in name:  # PEFT puts 1-D tensors (DoRA) with B
            assert lr_of[id(param)] == pytest.approx(1.6e-2), name
        elif "lora_A" in name:
            assert lr_of[id(param)] == pytest.approx(1e-3), name
        else:
            assert "embed_tokens" in name or "lm_head" in name
            assert lr_of[id(param)] == pytest.approx(5e-5), name
    assert all(p.requires_grad for _, p in named)  # hidden from PEFT only while the groups were built


@pytest.mark.slow  # trains 3 steps, merges and reloads (112 s at load average 17 on the shared 2-core machine)
def test_dora_loraplus_run_trains_and_exports_a_merged_model_that_passes_the_reload_check(
    dora, vi_docs, tmp_path, monkeypatch
):
    loaded = dora  # trained here, so this test comes last
    blocks = pack_documents(vi_docs[:20], loaded.tokenizer, 64).dataset
    built = []

    def spy(model, cfg, ratio, *args):
        built.append(ratio)
        return loraplus_optimizer(model, cfg, ratio, *args)

    monkeypatch.setattr(trainer_module, "loraplus_optimizer", spy)
    magnitude = next(p for n, p in loaded.model.named_parameters() if "lora_magnitude_vector" in n)
    before = magnitude.detach().clone()
    cfg = TrainConfig(output_dir=str(tmp_path / "run"), max_steps=3, per_device_batch_size=2, learning_rate=2e-3)
    result = train(loaded, blocks, cfg)  # the trainable check runs at step 2: DoRA magnitudes must move
    assert built == [8] and result.steps == 3
    assert not torch.equal(before, magnitude.detach())
    assert json.loads((result.final_dir / "adapter_config.json").read_text())["use_dora"] is True
    exported = export_adapter(result.final_dir, "tiny-llama", tmp_path / "out", dtype="fp32")
    check = exported.check
    assert check is not None and check.max_abs_diff <= check.tolerance and check.adapter_effect_max_abs > 0
    saved = json.loads((exported.merged_dir / "config.json").read_text())
    assert "lora" not in json.dumps(saved).lower()  # a plain model: DoRA's magnitudes are folded in
