import json
import math
import re
from pathlib import Path

import pytest
import torch

from cptnb.config import ModelConfig, Recipe, TrainConfig
from cptnb.data import pack_documents
from cptnb.errors import ConfigError, ModelNotAvailableError
from cptnb.paths import REPO_ROOT
from cptnb.planner import (
    Hardware,
    activation_bytes,
    estimate_memory,
    measure_step_seconds,
    model_shape,
    plan,
    steps_for,
    trainable_params,
)
from cptnb.planner.memory import OOM_SHARE

SEED_RECIPE = REPO_ROOT / "data_samples" / "recipes" / "llama32_1b_vi_full_8gpu.yaml"
# Llama-3.2-1B's published shape (its config.json on the hub), enough to build it on the meta device.
LLAMA32_1B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "vocab_size": 128256,
    "tie_word_embeddings": True,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
}
GPU = Hardware(device="cuda", num_devices=1, precision="bf16", weight_bytes=2)


def unique_numel(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def analytic_llama_params(c: dict) -> int:
    """Parameter count of a Llama from its config, written out independently of the planner."""
    h, i, layers, vocab = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    head_dim = c.get("head_dim") or h // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * head_dim, c["num_key_value_heads"] * head_dim
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h
    embeddings = vocab * h * (1 if c.get("tie_word_embeddings") else 2)
    return embeddings + layers * per_layer + h


@pytest.fixture
def llama_dir(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA32_1B))
    return tmp_path


@pytest.fixture(scope="module")
def blocks(tiny, vi_docs):
    return pack_documents(vi_docs[:40], tiny(method="full").tokenizer, 64).dataset


def recipe_for(name: str, **model) -> Recipe:
    return Recipe(model=ModelConfig(name=name, **model))


# --- parameter counts -----------------------------------------------------------------------------------------


def test_counts_from_config_match_the_real_tiny_model(tiny):
    loaded = tiny(method="full")
    from_config = model_shape(ModelConfig(name="tiny-llama"))
    assert from_config.total_params == unique_numel(loaded.model) == model_shape(loaded).total_params
    assert from_config.embedding_params == loaded.model.get_input_embeddings().weight.numel()


@pytest.mark.parametrize(
    "overrides",
    [
        {"method": "full"},
        {"method": "lora"},
        {"method": "lora", "train_embeddings": True},
        {"method": "lora", "target_modules": ["q_proj", "v_proj"], "lora_rank": 4},
    ],
)
def test_trainable_counts_match_what_peft_makes_trainable(tiny, overrides):
    loaded = tiny(**overrides)
    cfg = ModelConfig(name="tiny-llama", **overrides)
    from_config, from_loaded = model_shape(cfg), model_shape(loaded)
    # Counting from the PEFT-wrapped model must see only the base model.
    assert from_loaded.total_params == from_config.total_params
    assert from_loaded.embedding_params == from_config.embedding_params
    assert sum(trainable_params(from_config, cfg)) == loaded.trainable_params
    assert sum(trainable_params(from_loaded, cfg)) == loaded.trainable_params


def test_smollm2_is_counted_on_the_meta_device_without_loading_weights(monkeypatch):
    from transformers import AutoModelForCausalLM

    from cptnb.models.loading import resolve_source

    cfg = ModelConfig(name="smollm2-135m")
    try:
        source = resolve_source(cfg)
    except ModelNotAvailableError as err:
        pytest.skip(str(err))

    def no_weights(*args, **kwargs):
        raise AssertionError("the planner must not load weights")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_weights)
    shape = model_shape(cfg)
    config = json.loads((Path(source) / "config.json").read_text())
    assert shape.total_params == analytic_llama_params(config)
    assert 134e6 < shape.total_params < 136e6  # "SmolLM2-135M"


def test_a_hub_id_that_is_not_cached_offline_is_a_clear_error():
    with pytest.raises(ModelNotAvailableError, match="no-such-org/no-such-model"):
        model_shape(ModelConfig(name="no-such-org/no-such-model"))


def test_unknown_lora_target_names_the_field(tiny):
    cfg = ModelConfig(name="tiny-llama", target_modules=["query"])
    with pytest.raises(ConfigError, match="target_modules"):
        trainable_params(model_shape(cfg), cfg)


# --- memory ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["tiny", "llama"])
def test_model_state_memory_orders_full_over_lora_over_qlora(which, llama_dir):
    name, hardware = ("tiny-llama", None) if which == "tiny" else (str(llama_dir), GPU)
    recipe = recipe_for(name)
    shape = model_shape(recipe.model)
    hardware = hardware or Hardware("cpu", 1, "fp32", 4)
    state = {m: estimate_memory(shape, recipe, method=m, hardware=hardware).model_state_bytes
             for m in ("full", "lora", "qlora")}
    assert state["full"] > state["lora"] > state["qlora"]


def test_eight_bit_adam_keeps_a_quarter_of_adamw_state(llama_dir):
    recipe = recipe_for(str(llama_dir))
    shape = model_shape(recipe.model)
    adamw = estimate_memory(shape, recipe, hardware=GPU)
    recipe = recipe.replace(train={"optimizer": "adamw_8bit"})
    eight_bit = estimate_memory(shape, recipe, hardware=GPU)
    # LoRA adapters are fp32: AdamW keeps 2 x 4 bytes per parameter, 8-bit Adam 2 x 1.
    assert eight_bit.optimizer_bytes == pytest.approx(adamw.optimizer_bytes / 4)
    recipe = recipe.replace(train={"optimizer": "not_an_optimizer"})
    with pytest.raises(ConfigError, match="not_an_optimizer"):
        estimate_memory(shape, recipe, hardware=GPU)


def test_fp32_weights_under_bf16_autocast_also_hold_half_precision_copies(llama_dir):
    recipe = recipe_for(str(llama_dir), method="full")
    shape = model_shape(recipe.model)
    fp32 = estimate_memory(shape, recipe, hardware=Hardware("cuda", 1, "fp32", 4)).weights_bytes
    autocast = estimate_memory(shape, recipe, hardware=Hardware("cuda", 1, "bf16", 4)).weights_bytes
    assert fp32 == 4 * shape.total_params
    assert fp32 < autocast < 1.5 * fp32  # every linear weight once more, in 2 bytes


def test_gradient_checkpointing_lowers_activations_and_eager_attention_grows_with_seq_squared(llama_dir):
    recipe = recipe_for(str(llama_dir), method="full")
    shape = model_shape(recipe.model)
    plain = estimate_memory(shape, recipe, hardware=GPU)
    recipe = recipe.replace(train={"gradient_checkpointing": True})
    checkpointed = estimate_memory(shape, recipe, hardware=GPU)
    assert checkpointed.peak_activation_bytes < plain.peak_activation_bytes
    assert checkpointed.activations_bytes < plain.activations_bytes / 10  # one hidden state per layer is kept

    def layers(attn: str, seq: int) -> float:
        s = model_shape(shape)
        s.attn_implementation = attn
        return activation_bytes(s, recipe.model, "full", 1, seq, 2, False)[0]

    assert layers("sdpa", 2048) == pytest.approx(2 * layers("sdpa", 1024))  # linear in seq with flash kernels
    assert layers("eager", 2048) > 3 * layers("eager", 1024)  # the seq x seq scores dominate


def test_chunked_loss_on_gpu_avoids_the_full_logits(llama_dir):
    recipe = recipe_for(str(llama_dir), method="full")
    recipe = recipe.replace(model={"max_seq_len_tokens": 2048}, train={"per_device_batch_size": 8})
    shape = model_shape(recipe.model)
    full_logits = estimate_memory(shape, recipe, hardware=GPU).logits_bytes
    chunked = estimate_memory(shape, recipe, hardware=Hardware("cuda", 1, "bf16", 2, fused_loss=True)).logits_bytes
    assert full_logits == 3 * 4 * 8 * 2048 * LLAMA32_1B["vocab_size"]  # fp32 logits, log-softmax, gradient
    assert chunked < full_logits / 10


@pytest.mark.parametrize("overrides", [{"method": "full"}, {"method": "lora", "train_embeddings": True}])
def test_activation_estimate_matches_the_tensors_autograd_saves(tiny, overrides):
    loaded = tiny(**overrides)
    cfg = ModelConfig(name="tiny-llama", **overrides)
    batch, seq = 2, 128
    ids = torch.randint(0, 1000, (batch, seq))
    storages: dict[int, int] = {}

    def keep(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    params = {p.untyped_storage().data_ptr() for p in loaded.model.parameters()}
    loaded.model.train()
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        loss = loaded.model(input_ids=ids, labels=ids).loss
    loss.backward()
    loaded.model.zero_grad(set_to_none=True)
    measured = sum(n for ptr, n in storages.items() if ptr not in params)
    shape = model_shape(loaded)
    saved, _, _ = activation_bytes(shape, cfg, cfg.method, batch, seq, 4, False)
    saved += 4 * batch * seq * shape.vocab_size  # the log-softmax cross-entropy keeps (fp32)
    assert measured == pytest.approx(saved, rel=0.05)


def test_sharding_divides_per_device_memory_by_the_device_count(llama_dir):
    recipe = recipe_for(str(llama_dir), method="full")
    shape = model_shape(recipe.model)

    def on(n: int, strategy: str):
        return estimate_memory(shape, recipe, hardware=Hardware("cuda", n, "bf16", 2), strategy=strategy)

    gathered = 2 * shape.largest_layer_params * 2  # the layer FSDP all-gathers, plus the prefetched next one
    for strategy in ("fsdp", "zero3"):
        two, eight = on(2, strategy), on(8, strategy)
        assert two.optimizer_bytes == pytest.approx(4 * eight.optimizer_bytes)
        assert two.gradients_bytes == pytest.approx(4 * eight.gradients_bytes)
        assert two.weights_bytes - gathered == pytest.approx(4 * (eight.weights_bytes - gathered))
    # DDP keeps a full replica per device: more devices do not lower it.
    assert on(2, "ddp").model_state_bytes == on(8, "ddp").model_state_bytes
    # ZeRO-1 shards only the optimizer (and its fp32 master copy).
    assert on(8, "zero1").gradients_bytes == on(8, "zero0").gradients_bytes
    assert on(8, "zero1").optimizer_bytes == pytest.approx(on(8, "zero0").optimizer_bytes / 8)


# --- the plan -------------------------------------------------------------------------------------------------


def _bytes(number: str, unit: str) -> float:
    return float(number) * {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit]


def test_out_of_memory_warning_appears_only_when_memory_is_short():
    recipe = recipe_for("tiny-llama")
    short = plan(recipe, available_memory_bytes=8 * 2**20, measure=False, device="cpu", num_devices=1)
    assert short.chosen.total_bytes > 8 * 2**20
    oom = [w for w in short.warnings if "out of memory" in w]
    assert len(oom) == 1 and "gradient_checkpointing" in oom[0] and "per_device_batch_size: 2" in oom[0]
    assert "No single change fits" in oom[0]  # 8 MiB: nothing fits a model that needs hundreds
    roomy = plan(recipe, available_memory_bytes=2**40, measure=False, device="cpu", num_devices=1)
    assert not [w for w in roomy.warnings if "out of memory" in w]


def _options(text: str) -> list[float]:
    return [_bytes(n, unit) for n, unit in re.findall(r" -> ([\d.]+) (KiB|MiB|GiB)", text)]


def test_out_of_memory_options_that_fit_are_told_apart_from_those_that_do_not():
    recipe = recipe_for("tiny-llama")
    need = plan(recipe, available_memory_bytes=2**40, measure=False, device="cpu", num_devices=1).chosen.total_bytes
    just_short = need / OOM_SHARE * 0.995  # a little too small for the recipe as it is
    p = plan(recipe, available_memory_bytes=just_short, measure=False, device="cpu", num_devices=1)
    [oom] = [w for w in p.warnings if "out of memory" in w]
    fits, _, short = oom.partition(" Not enough alone: ")
    assert "Each of these fits alone:" in fits and _options(fits), oom
    rounding = 0.05 * 2**20  # sizes are printed to a tenth of a MiB
    assert all(b <= OOM_SHARE * just_short + rounding for b in _options(fits)), oom
    assert all(b > OOM_SHARE * just_short - rounding for b in _options(short)), oom
    assert _options(fits) == sorted(_options(fits))  # cheapest first


def test_warm_up_times_real_steps_and_leaves_the_model_as_it_was(tiny, blocks):
    loaded = tiny(method="lora", train_embeddings=True)
    recipe = recipe_for("tiny-llama")
    recipe = recipe.replace(train=TrainConfig(per_device_batch_size=2, gradient_accumulation_steps=3,
                                              gradient_checkpointing=True))
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    loaded.model.eval()
    rng = torch.get_rng_state()
    timing = measure_step_seconds(loaded, blocks, recipe, steps=2)
    assert timing.seconds_per_step > 0 and timing.micro_batch_seconds > 0
    assert timing.seconds_per_step >= 3 * timing.micro_batch_seconds  # three micro-batches per optimizer step
    after = loaded.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in loaded.model.parameters())
    assert not loaded.model.training and not loaded.model.base_model.model.is_gradient_checkpointing
    assert torch.equal(rng, torch.get_rng_state())


def test_plan_with_a_loaded_model_measures_time_and_renders(tiny, blocks):
    loaded = tiny(method="lora")
    recipe = recipe_for("tiny-llama", method="lora")
    recipe = recipe.replace(train=TrainConfig(max_steps=7, per_device_batch_size=2))
    p = plan(recipe, loaded=loaded, dataset=blocks, device="cpu", num_devices=1)
    assert p.block_tokens == 64 and p.tokens_per_step == 128 and p.steps == 7 and p.total_tokens == 7 * 128
    assert p.estimated_seconds == pytest.approx(7 * p.seconds_per_step) and p.seconds_per_step > 0
    assert p.trainable_params == loaded.trainable_params
    text = p.markdown()
    assert "**lora** (chosen)" in text and "| qlora |" in text and "| full |" in text and str(p) == text
    json.dumps(p.to_dict())  # serialisable for the CLI and run logs


@pytest.mark.parametrize("blocks_in_data,micro,accum,devices,epochs", [(1000, 4, 3, 1, 1.5), (97, 2, 4, 1, 2.0)])
def test_epoch_steps_agree_with_transformers_trainer(tiny, tmp_path, blocks_in_data, micro, accum, devices, epochs):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    recipe = recipe_for("tiny-llama")
    recipe = recipe.replace(train=TrainConfig(max_steps=-1, num_train_epochs=epochs, per_device_batch_size=micro,
                                              gradient_accumulation_steps=accum))
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=-1, num_train_epochs=epochs, use_cpu=True,
                             per_device_train_batch_size=micro, gradient_accumulation_steps=accum, report_to="none")
    data = Dataset.from_dict({"input_ids": [[1, 2, 3, 4]] * blocks_in_data})
    trainer = Trainer(model=tiny(method="full").model, args=args, train_dataset=data)
    expected_steps = trainer.set_initial_training_values(args, trainer.get_train_dataloader())[-1]
    assert steps_for(recipe, blocks_in_data, devices) == expected_steps
    p = plan(recipe, dataset=blocks_in_data, measure=False, device="cpu", num_devices=devices)
    assert p.steps == expected_steps and p.total_tokens == round(blocks_in_data * p.block_tokens * epochs)


def test_seed_001_llama32_1b_full_on_eight_gpus_planned_from_config_alone(llama_dir):
    recipe = Recipe.from_yaml(SEED_RECIPE).replace(model={"name": str(llama_dir)})
    blocks = math.ceil(2.8e9 / 2048)  # the seed's ~2.8B training tokens
    p = plan(recipe, dataset=blocks, available_memory_bytes=80 * 2**30, device="cuda", num_devices=8)
    assert p.total_params == analytic_llama_params(LLAMA32_1B) and 1.23e9 < p.total_params < 1.25e9
    assert p.trainable_params == p.total_params
    assert p.tokens_per_step == 2048 * 8 * 16 * 8
    assert p.total_tokens == pytest.approx(2 * 2.8e9, rel=1e-3)
    assert p.steps == 2 * math.ceil(math.ceil(blocks / 64) / 16)
    assert p.seconds_per_step is None and p.estimated_seconds is None  # a CPU cannot time an H100 run
    assert not [w for w in p.warnings if "out of memory" in w]  # it ran on 80 GB H100s
    assert any("zero_stage=1 has no effect" in w for w in p.warnings)
    assert set(p.strategies) == {"ddp", "zero1", "zero2", "zero3", "fsdp"}
    assert p.strategies["zero3"].total_bytes < p.strategies["ddp"].total_bytes
    t4 = plan(recipe, dataset=blocks, available_memory_bytes=15 * 2**30, device="cuda", num_devices=8)
    assert [w for w in t4.warnings if "out of memory" in w]
