"""Export at an interpolation alpha: the adapter and the merged model both rebuild base + alpha x (trained - base)."""

import json

import pytest
import torch
from _helpers import perturb_lora
from transformers import AutoModelForCausalLM

from cptnb.config import Recipe
from cptnb.errors import ConfigError
from cptnb.export import ExportConfig, export_run
from cptnb.models.interpolate import interpolated

TEXT = "Hà Nội là thủ đô của Việt Nam. The library opens at nine."


def _run(root, loaded, method):
    root.mkdir(parents=True, exist_ok=True)
    recipe = Recipe().replace(model={"name": "tiny-llama", "method": method, "train_embeddings": method == "lora",
                                     "max_seq_len_tokens": 64}, train={"output_dir": str(root), "max_steps": 2})
    recipe.to_yaml(root / "recipe.yaml")
    final = root / ("model" if method == "full" else "adapter")
    loaded.model.save_pretrained(final)
    loaded.tokenizer.save_pretrained(final)
    return root


@pytest.fixture(scope="module")
def lora(tiny, tmp_path_factory):
    loaded = tiny(method="lora", train_embeddings=True)
    perturb_lora(loaded, 7)
    return loaded, _run(tmp_path_factory.mktemp("lora_run"), loaded, "lora")


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.mark.slow  # two exports' worth of loading, merging and reload checks
def test_lora_export_at_half_rebuilds_the_interpolated_model(lora, tmp_path):
    from peft import PeftModel

    loaded, run = lora
    ids = loaded.tokenizer(TEXT, return_tensors="pt").input_ids
    with interpolated(loaded.model, 0.5):
        expected = _logits(loaded.model, ids)
    result = export_run(run, tmp_path / "out", dtype="fp32", interpolation_alpha=0.5)
    assert result.check.passed
    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir).eval()
    assert (_logits(merged, ids) - expected).abs().max() < 1e-4
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert config["lora_alpha"] == 16.0 and config["r"] == 16  # tiny-llama's LoRA: alpha 32 at r 16, halved
    base = AutoModelForCausalLM.from_pretrained(loaded.source).eval()
    reloaded = PeftModel.from_pretrained(base, str(result.adapter_dir)).eval()
    assert (_logits(reloaded, ids) - expected).abs().max() < 1e-4  # the adapter alone rebuilds it too
    record = json.loads(result.export_json.read_text())
    assert record["interpolation_alpha"] == 0.5
    card = result.card.read_text()
    assert "interpolated toward the base at alpha 0.5" in card and "## Weight interpolation" in card
    assert "`lora_alpha` 32 -> 16.0" in card


@pytest.mark.slow
def test_full_export_at_zero_is_the_base_model(tiny, tmp_path):
    trained = tiny(method="full")
    with torch.no_grad():
        for p in trained.model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    run = _run(tmp_path / "run", trained, "full")
    result = export_run(run, tmp_path / "out", dtype="fp32", interpolation_alpha=0.0)
    base = AutoModelForCausalLM.from_pretrained(trained.source).eval()
    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir).eval()
    ids = trained.tokenizer(TEXT, return_tensors="pt").input_ids
    assert torch.equal(_logits(merged, ids), _logits(base, ids))
    assert "every weight of the full run was interpolated" in result.card.read_text()


def test_alpha_outside_zero_one_is_refused():
    with pytest.raises(ConfigError, match="interpolation_alpha must be in"):
        ExportConfig(run_dir="runs/x", interpolation_alpha=1.5)
