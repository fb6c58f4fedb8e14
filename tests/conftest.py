"""Shared fixtures. Tests run offline: no hub access is ever needed."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist (`make test`) the cores are shared among the workers: threads for each, set before torch is
# imported (and inherited by the notebook kernels and CLI subprocesses a test starts), so that the workers' math
# libraries do not oversubscribe the CPU.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    import torch

    # `make test` (--dist loadgroup): a module's tests stay on one worker, so its module-scoped fixtures (a trained
    # run, an export) are built once; the notebook runs, which share nothing, spread over the workers one by one.
    for item in items:
        if "notebook" not in item.keywords:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
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
