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
    recipe = Recipe().replace(model={"target_modules": ["q_proj", "v_proj"]}, train={"max_steps": 7})
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


def test_a_changed_value_is_checked_like_a_constructed_one():
    with pytest.raises(ConfigError) as built:
        TrainConfig(max_steps=-5)
    train = TrainConfig()
    with pytest.raises(ConfigError) as changed:
        train.replace(max_steps=-5)
    assert changed.value.problems == built.value.problems == [
        "max_steps must be > 0, or -1 to train by epochs; got -5"
    ]
    assert str(changed.value) == str(built.value)  # same section named, same message
    # Assigning is refused: it reports the same problem, then names the replace call to write; nothing changes.
    with pytest.raises(ConfigError) as assigned:
        train.max_steps = -5
    assert assigned.value.problems[0] == built.value.problems[0]
    assert "recipe.replace(train={'max_steps': -5})" in assigned.value.problems[-1]
    with pytest.raises(ConfigError, match="frozen"):
        train.max_steps = 7  # a valid value too: every change goes through replace
    assert train.max_steps == 40


def test_recipe_replace_reports_every_problem_like_from_dict():
    changes = {"model": {"lora_rank": -1}, "train": {"learning_rate": 0}, "data": {"dedup": {"threshold": 2}}}
    with pytest.raises(ConfigError) as built:
        Recipe.from_dict(changes)
    with pytest.raises(ConfigError) as changed:
        Recipe().replace(**changes)
    assert changed.value.problems == built.value.problems
    assert "data.dedup.threshold must be a Jaccard similarity in (0, 1), got 2" in changed.value.problems
    with pytest.raises(ConfigError, match="unknown section 'trian'"):
        Recipe().replace(trian={"max_steps": 1})
    with pytest.raises(ConfigError, match="unknown field 'lora_rnk'"):
        Recipe().replace(model={"lora_rnk": 8})


def test_recipe_replace_changes_fields_together_and_leaves_the_original():
    recipe = Recipe()
    # replay_share > 0 needs replay_sources: one replace sets both, so the check sees the finished change.
    changed = recipe.replace(
        data={"replay_share": 0.2, "replay_sources": ["data_samples/en"], "dedup": {"threshold": 0.7}},
        train={"max_steps": 5},
    )
    assert (changed.data.replay_share, changed.data.replay_sources, changed.data.dedup.threshold) == (
        0.2, ["data_samples/en"], 0.7)
    assert changed.data.dedup.num_perm == recipe.data.dedup.num_perm  # other nested fields kept
    assert changed.train.max_steps == 5 and changed.model == recipe.model
    assert recipe.data.replay_share == 0.0 and recipe.train.max_steps == 40 and recipe.data.dedup.threshold != 0.7
    assert changed.data.sources == recipe.data.sources and changed.data.sources is not recipe.data.sources
    # A whole section may be given too (its fields not named keep their defaults).
    assert Recipe().replace(train=TrainConfig(max_steps=3)).train == TrainConfig(max_steps=3)


def test_every_section_of_a_recipe_is_frozen():
    from cptnb.export.config import ExportConfig

    recipe = Recipe()
    for section, name, value in [(recipe, "train", TrainConfig()), (recipe.data, "replay_share", 0.1),
                                 (recipe.data.dedup, "threshold", 2), (recipe.data.filters, "c4", False),
                                 (recipe.eval, "limit", 3), (ExportConfig(run_dir="r"), "dtype", "int8")]:
        before = getattr(section, name)
        with pytest.raises(ConfigError, match="frozen"):
            setattr(section, name, value)
        assert getattr(section, name) == before
    with pytest.raises(ConfigError, match="dedup.replace\\(threshold=2\\)"):
        recipe.data.dedup.threshold = 2
    assert ExportConfig(run_dir="r").replace(dtype="bfloat16").dtype == "bf16"


def test_a_sample_recipe_loads_by_name_from_any_working_folder(tmp_path, monkeypatch):
    from cptnb.paths import data_samples_dir

    monkeypatch.chdir(tmp_path)  # not the repository root: relative data paths would not be found
    recipe = Recipe.from_sample("smollm2_vi_lora_cpu")
    assert recipe == Recipe.from_sample("smollm2_vi_lora_cpu.yaml")
    assert recipe.data.sources == [str(data_samples_dir().parent / "data_samples/vi")]
    assert recipe.model.name == "smollm2-135m" and recipe.train.max_steps == 24
    assert "smollm2_vi_lora_cpu" in Recipe.sample_names() and "tiny_cpu_2proc" in Recipe.sample_names()
    with pytest.raises(ConfigError) as err:
        Recipe.from_sample("smollm2_vi_lora")
    assert "no sample recipe named 'smollm2_vi_lora'; available: " in str(err.value)
    assert all(name in str(err.value) for name in Recipe.sample_names())


def test_a_sample_recipe_takes_changes_whose_paths_are_read_like_its_own(tmp_path, monkeypatch):
    from cptnb.paths import data_samples_dir

    monkeypatch.chdir(tmp_path)
    news = ["data_samples/vi/news.jsonl"]  # relative to the repository root, as in a recipe file
    recipe = Recipe.from_sample("smollm2_vi_lora_cpu", data={"sources": news, "replay_share": 0.2},
                                train={"max_steps": 3})
    assert recipe.data.sources == [str(data_samples_dir().parent / "data_samples/vi/news.jsonl")]
    assert (recipe.data.replay_share, recipe.train.max_steps) == (0.2, 3)
    with pytest.raises(ConfigError, match="train.max_steps must be > 0"):
        Recipe.from_sample("smollm2_vi_lora_cpu", train={"max_steps": 0})
