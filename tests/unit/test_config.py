import pytest

from cptnb.config import DataConfig, ModelConfig, Recipe, TrainConfig
from cptnb.errors import ConfigError


def test_every_problem_is_reported_at_once_with_the_fix():
    with pytest.raises(ConfigError) as err:
        ModelConfig(method="lorra", lora_rank=0, lora_dropout=1.5)
    problems = err.value.problems
    assert len(problems) == 3
    assert any("method must be one of lora, qlora, full" in p for p in problems)
    assert any("lora_rank must be > 0, got 0" in p for p in problems)
    assert any("lora_dropout" in p for p in problems)


def test_recipe_collects_problems_across_sections():
    with pytest.raises(ConfigError) as err:
        Recipe.from_dict({"model": {"lora_rank": -1}, "train": {"learning_rate": 0}})
    assert err.value.problems == ["model.lora_rank must be > 0, got -1", "train.learning_rate must be > 0, got 0"]


def test_unknown_fields_and_sections_are_errors():
    with pytest.raises(ConfigError, match="unknown field 'lora_rnk'"):
        Recipe.from_dict({"model": {"lora_rnk": 8}})
    with pytest.raises(ConfigError, match="unknown section 'trian'"):
        Recipe.from_dict({"trian": {}})


def test_yaml_round_trip(tmp_path):
    recipe = Recipe()
    recipe.model.target_modules = ["q_proj", "v_proj"]
    recipe.train.max_steps = 7
    path = tmp_path / "r.yaml"
    recipe.to_yaml(path)
    again = Recipe.from_yaml(path)
    assert again.to_dict() == recipe.to_dict()
    assert again.model.target_modules == ["q_proj", "v_proj"]


def test_replay_share_needs_a_replay_source():
    with pytest.raises(ConfigError, match="needs replay_sources"):
        DataConfig(replay_share=0.1)


def test_embedding_learning_rate_defaults_to_a_tenth():
    assert TrainConfig(learning_rate=1e-3).effective_embedding_learning_rate == pytest.approx(1e-4)
    assert TrainConfig(learning_rate=1e-3, embedding_learning_rate=5e-5).effective_embedding_learning_rate == 5e-5


def test_every_field_has_help():
    for section in (ModelConfig, TrainConfig, DataConfig):
        assert all(section.help().values()), section


def test_recipe_paths_are_read_under_the_repository_root_from_any_working_folder(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    (root / "data_samples" / "vi").mkdir(parents=True)
    (root / "data_samples" / "eval").mkdir()
    here = tmp_path / "notebooks"  # where Jupyter starts the kernel
    (here / "local.jsonl").parent.mkdir()
    (here / "local.jsonl").write_text("{}\n")
    monkeypatch.chdir(here)
    recipe = Recipe(data=DataConfig(sources=["data_samples/vi", "local.jsonl", "missing/*.jsonl", "/abs/x.jsonl"],
                                    heldout_domain=[], heldout_general=[]))
    fixed = recipe.with_paths_under(root)
    # Found under the root: rewritten; present here, absolute, or nowhere: kept, so a reader's error names it as given.
    assert fixed.data.sources == [str(root / "data_samples/vi"), "local.jsonl", "missing/*.jsonl", "/abs/x.jsonl"]
    assert fixed.eval.tasks == [str(root / "data_samples/eval")]
    assert recipe.data.sources[0] == "data_samples/vi"  # a copy: the original recipe is unchanged
    # Every list-valued data field holds paths: a new one must be added to PATH_FIELDS too.
    assert set(DataConfig.PATH_FIELDS) == {f for f, v in DataConfig().to_dict().items() if isinstance(v, list)}


def test_one_dtype_vocabulary_for_model_train_and_export(tmp_path):
    from cptnb.export.config import ExportConfig

    # Canonical names are the short ones; torch's long names (old recipes) normalise to them.
    assert ModelConfig(dtype="bfloat16").dtype == "bf16"
    assert ModelConfig(dtype="float16").dtype == "fp16" and ModelConfig(dtype="torch.float32").dtype == "fp32"
    assert TrainConfig(precision="bfloat16").precision == "bf16"
    assert ExportConfig(run_dir="r", dtype="BFloat16").dtype == "bf16"
    assert ModelConfig.__dataclass_fields__["dtype"].metadata["help"].count("bf16") >= 1
    old = tmp_path / "old.yaml"
    old.write_text("model:\n  dtype: bfloat16\n", encoding="utf-8")
    assert Recipe.from_yaml(old).model.dtype == "bf16"
    with pytest.raises(ConfigError, match="dtype must be one of auto, bf16, fp16, fp32; got 'bf8'"):
        ModelConfig(dtype="bf8")


def test_dtype_names_map_to_torch_and_bytes():
    import torch

    from cptnb.configbase import BYTES_PER_VALUE, DTYPE_NAMES
    from cptnb.models.loading import resolve_dtype, torch_dtype

    for name in DTYPE_NAMES:
        assert torch_dtype(name).itemsize == BYTES_PER_VALUE[name]
    assert torch_dtype("bfloat16") is torch.bfloat16 and resolve_dtype("fp16") is torch.float16
    with pytest.raises(ConfigError, match="dtype must be one of bf16, fp16, fp32"):
        torch_dtype("int8")
