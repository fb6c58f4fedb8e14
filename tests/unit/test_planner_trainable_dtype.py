"""The planner counts trainable tensors as the run holds them: fp32 under bf16 weights (train_in_fp32)."""

from __future__ import annotations

import pytest

from cptnb.config import ModelConfig, Recipe
from cptnb.planner.memory import Hardware, estimate_memory
from cptnb.planner.shape import model_shape, trainable_params

BF16_GPU = Hardware("cuda", 1, "bf16", 2)


@pytest.fixture(scope="module")
def shape():
    return model_shape(ModelConfig(name="tiny-llama"))


def _recipe(method: str, train_embeddings: bool = True) -> Recipe:
    return Recipe().replace(model={"name": "tiny-llama", "method": method, "train_embeddings": train_embeddings})


def test_full_training_under_bf16_weights_holds_fp32_weights_gradients_and_adamw(shape):
    e = estimate_memory(shape, _recipe("full"), hardware=BF16_GPU)
    n = e.trainable_params
    assert n == shape.total_params
    assert e.gradients_bytes == 4 * n  # fp32 gradients of fp32 trainables
    assert e.optimizer_bytes == 2 * 4 * n  # AdamW's two fp32 moments
    assert e.weights_bytes > 4 * n  # fp32 weights plus autocast's bf16 copies of the linear layers


def test_trained_embeddings_under_bf16_weights_are_counted_in_fp32(shape):
    recipe = _recipe("lora")
    main, embeddings = trainable_params(shape, recipe.model, "lora")
    e = estimate_memory(shape, recipe, hardware=BF16_GPU)
    assert e.gradients_bytes == 4 * (main + embeddings)
