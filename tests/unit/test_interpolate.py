"""Weight interpolation: alpha 0 is the base model and alpha 1 the trained one, bit for bit; between is linear."""

import pytest
import torch
from _helpers import perturb_lora

from cptnb.errors import ConfigError
from cptnb.models.interpolate import (
    InterpolationError,
    interpolate_in_place,
    interpolated,
    scaled_lora_config,
)

TEXT = "Hà Nội là thủ đô của Việt Nam. The library opens at nine."


def _trained_lora(tiny, seed=0):
    """A LoRA model whose adapter and trained embeddings both moved."""
    loaded = tiny(method="lora", train_embeddings=True)
    return perturb_lora(loaded, seed), loaded.tokenizer


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def lora(tiny):
    model, tokenizer = _trained_lora(tiny)
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    with model.disable_adapter():
        base = _logits(model, ids)
    return model, ids, base, _logits(model, ids)


def test_lora_alpha_0_is_the_base_and_alpha_1_the_trained_model_exactly(lora):
    model, ids, base, trained = lora
    assert (trained - base).abs().max() > 0.1  # the planted training really changed the logits
    with interpolated(model, 0.0):
        assert torch.equal(_logits(model, ids), base)
    with interpolated(model, 1.0):
        assert torch.equal(_logits(model, ids), trained)
    assert torch.equal(_logits(model, ids), trained)  # restored after the blocks


def test_lora_half_lies_between_and_the_embeddings_move_halfway(lora):
    model, ids, base, trained = lora
    embed = model.get_input_embeddings()
    original, trained_rows = embed.original_module.weight.clone(), embed.modules_to_save["default"].weight.clone()
    with interpolated(model, 0.5):
        half = _logits(model, ids)
        assert torch.allclose(embed.modules_to_save["default"].weight, (original + trained_rows) / 2, atol=1e-6)
        # lm_head is tied to the trained embeddings (ensure_weight_tying): it moved with them, not twice
        head = model.get_output_embeddings().modules_to_save["default"]
        assert head.weight is embed.modules_to_save["default"].weight
    assert 0 < (half - base).abs().max() < (trained - base).abs().max()
    assert torch.equal(embed.modules_to_save["default"].weight, trained_rows)
    assert torch.equal(embed.original_module.weight, original)  # the base's own copy is never written


def test_the_block_restores_the_model_after_an_error(lora):
    model, ids, _, trained = lora
    with pytest.raises(RuntimeError, match="inside"), interpolated(model, 0.25):
        raise RuntimeError("inside")
    assert torch.equal(_logits(model, ids), trained)


def test_full_run_interpolates_every_weight_from_the_base(tiny):
    base = tiny(method="full").model.eval()
    trained = tiny(method="full").model.eval()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ids = tiny(method="full").tokenizer(TEXT, return_tensors="pt").input_ids
    base_logits, trained_logits = _logits(base, ids), _logits(trained, ids)
    with interpolated(trained, 0.0, base=base):
        assert torch.equal(_logits(trained, ids), base_logits)
    with interpolated(trained, 1.0, base=base.state_dict()):
        assert torch.equal(_logits(trained, ids), trained_logits)
    before = {n: p.detach().clone() for n, p in trained.named_parameters()}
    with interpolated(trained, 0.5, base=base):
        for (name, p), q in zip(trained.named_parameters(), base.parameters()):
            assert torch.allclose(p, (q + before[name]) / 2, atol=1e-6), name
        half = _logits(trained, ids)
    assert 0 < (half - base_logits).abs().max() < (trained_logits - base_logits).abs().max()
    assert torch.equal(_logits(trained, ids), trained_logits)


def test_permanent_interpolation_matches_the_temporary_one(tiny):
    model, tokenizer = _trained_lora(tiny, seed=3)
    ids = tokenizer(TEXT, return_tensors="pt").input_ids
    with interpolated(model, 0.3):
        expected = _logits(model, ids)
    interpolate_in_place(model, 0.3)
    assert torch.allclose(_logits(model, ids), expected, atol=1e-6)


def test_mistakes_are_named(lora, tiny):
    model = lora[0]
    with pytest.raises(ConfigError, match="finite number"), interpolated(model, float("nan")):
        pass
    with pytest.raises(InterpolationError, match="without base="), interpolated(model, 0.5, base={}):
        pass
    full = tiny(method="full").model
    with pytest.raises(InterpolationError, match="needs base="), interpolated(full, 0.5):
        pass
    with pytest.raises(InterpolationError, match="does not match"), interpolated(full, 0.5, base={}):
        pass


def test_scaled_lora_config_scales_alpha_and_its_pattern_only():
    config = {"r": 16, "lora_alpha": 32, "alpha_pattern": {"q_proj": 8}, "use_rslora": True}
    scaled = scaled_lora_config(config, 0.25)
    assert scaled == {"r": 16, "lora_alpha": 8.0, "alpha_pattern": {"q_proj": 2.0}, "use_rslora": True}
    assert config["lora_alpha"] == 32  # the input is not changed
