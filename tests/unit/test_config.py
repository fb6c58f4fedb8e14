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
