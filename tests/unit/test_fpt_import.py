import json

import pytest

from cptnb.errors import ConfigError
from cptnb.fpt_import import import_fpt
from cptnb.paths import data_samples_dir


def _seed():
    return json.loads((data_samples_dir() / "recipes" / "fpt_llama32_1b_vi.json").read_text())


def test_seed_001_hyperparameters_map_to_the_recipe():
    recipe, notes = import_fpt(_seed())
    m, t = recipe.model, recipe.train
    assert (m.name, m.method, m.max_seq_len_tokens) == ("meta-llama/Llama-3.2-1B", "full", 2048)
    assert (m.lora_rank, m.lora_alpha, m.lora_dropout, m.target_modules) == (16, 32, 0.05, "all-linear")
    assert (t.per_device_batch_size, t.gradient_accumulation_steps) == (8, 16)
    assert (t.learning_rate, t.lr_scheduler, t.warmup_steps) == (4e-5, "linear", 0)
    assert (t.warmup_ratio, t.min_lr_ratio) == (0.0, 0.0)
    assert (t.num_train_epochs, t.max_steps, t.precision, t.optimizer) == (2.0, -1, "bf16", "adamw_torch")
    assert (t.weight_decay, t.max_grad_norm, t.seed) == (0.0, 1.0, 1309)
    assert (t.distributed_backend, t.zero_stage, t.gradient_checkpointing) == ("ddp", 1, True)
    assert (t.save_steps, t.eval_steps, t.logging_steps, t.save_total_limit) == (1000, 1000, 10, 1)
    assert any(n.startswith("pref_beta=") for n in notes) and len(notes) == 10


def test_yaml_round_trip_of_the_imported_recipe(tmp_path):
    from cptnb.config import Recipe

    recipe, _ = import_fpt(_seed())
    recipe.to_yaml(tmp_path / "r.yaml")
    assert Recipe.from_yaml(tmp_path / "r.yaml").to_dict() == recipe.to_dict()


def test_four_bit_lora_becomes_qlora_and_bad_values_are_reported():
    seed = {**_seed(), "finetuning_type": "lora", "quantization_bit": 4}
    assert import_fpt(seed)[0].model.method == "qlora"
    with pytest.raises(ConfigError) as err:
        import_fpt({**_seed(), "finetuning_type": "freeze", "mixed_precision": "fp8"})
    assert len(err.value.problems) == 2
