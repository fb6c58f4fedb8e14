"""GPU tier: run with `make test-gpu` on a CUDA machine; skipped elsewhere (see conftest)."""

import math

import pytest
import torch

from cptnb.config import ModelConfig, TrainConfig
from cptnb.data import pack_documents
from cptnb.models.loading import load_model
from cptnb.train.trainer import resolve_precision, train

pytestmark = pytest.mark.gpu


def test_auto_backend_takes_unsloth_and_bf16():
    pytest.importorskip("unsloth")
    loaded = load_model(ModelConfig(name="smollm2-135m", method="lora", train_embeddings=True))
    assert loaded.backend == "unsloth"
    assert next(loaded.model.parameters()).is_cuda
    if torch.cuda.is_bf16_supported():
        assert resolve_precision("auto") == "bf16"


def test_qlora_through_bitsandbytes_trains_on_gpu(vi_docs, tmp_path):
    loaded = load_model(ModelConfig(name="smollm2-135m", method="qlora"))
    assert any(type(m).__name__ == "Linear4bit" for m in loaded.model.modules())
    blocks = pack_documents(vi_docs[:40], loaded.tokenizer, 256).dataset
    result = train(loaded, blocks, TrainConfig(output_dir=str(tmp_path), max_steps=10, learning_rate=1e-3))
    losses = [e["train_loss"] for e in result.history if "train_loss" in e]
    assert result.steps == 10 and len(losses) == 10
    assert all(math.isfinite(x) for x in losses)  # neither NaN nor inf
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3  # it learned
