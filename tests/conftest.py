"""Shared fixtures. Tests run offline: no hub access is ever needed."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny():
    """A LoRA-ready tiny-llama bundle factory: tiny(method=..., train_embeddings=...)."""
    from cptnb.config import ModelConfig
    from cptnb.models.loading import load_model

    def make(**overrides):
        return load_model(ModelConfig(**{"name": "tiny-llama", **overrides}))

    return make


@pytest.fixture(scope="session")
def vi_docs():
    from cptnb.data import clean_documents, read_documents
    from cptnb.paths import data_samples_dir

    return list(clean_documents(read_documents([data_samples_dir() / "vi"])))
