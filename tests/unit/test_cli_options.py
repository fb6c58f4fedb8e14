"""The CLI's recipe options are generated from the dataclasses and override YAML values."""

import argparse
import dataclasses

import pytest

from cptnb.cli import build_parser
from cptnb.cli_options import add_recipe_options, overrides_from_args, recipe_from_args
from cptnb.config import Recipe
from cptnb.configbase import Section
from cptnb.errors import ConfigError


def _leaf_paths(section, prefix):
    paths = []
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if isinstance(value, Section):
            paths += _leaf_paths(value, f"{prefix}.{f.name}")
        else:
            paths.append(f"{prefix}.{f.name}")
    return paths


def _parse(*argv):
    parser = argparse.ArgumentParser()
    add_recipe_options(parser)
    return parser.parse_args(list(argv))


def test_every_recipe_field_has_an_option_with_its_help():
    parser = argparse.ArgumentParser()
    add_recipe_options(parser)
    options = {s for action in parser._actions for s in action.option_strings}
    recipe = Recipe()
    expected = [p for name in ("data", "model", "train", "eval") for p in _leaf_paths(getattr(recipe, name), name)]
    assert expected and all(f"--{p}" in options for p in expected)
    helps = {a.dest: a.help for a in parser._actions}
    assert "alpha / sqrt(r)" in helps["recipe:model.use_rslora"]


def test_overrides_are_typed_and_applied_over_defaults():
    recipe = recipe_from_args(
        _parse(
            "--train.learning_rate", "1e-4",
            "--train.max_steps", "7",
            "--model.use_rslora", "true",
            "--model.target_modules", "q_proj", "v_proj",
            "--data.dedup.threshold", "0.5",
            "--data.filters.gopher_min_words", "50",
            "--eval.prompts", "Hà Nội là", "Việt Nam có",
        )
    )
    assert recipe.train.learning_rate == pytest.approx(1e-4)
    assert recipe.train.max_steps == 7 and isinstance(recipe.train.max_steps, int)
    assert recipe.model.use_rslora is True
    assert recipe.model.target_modules == ["q_proj", "v_proj"]
    assert recipe.data.dedup.threshold == 0.5
    assert recipe.data.filters.gopher_min_words == 50
    assert recipe.eval.prompts == ["Hà Nội là", "Việt Nam có"]
    untouched = Recipe()
    assert recipe.model.lora_rank == untouched.model.lora_rank
    assert recipe.data.dedup.ngram_words == untouched.data.dedup.ngram_words


def test_optional_fields_accept_none():
    # None means "use the language's default" for the Gopher thresholds.
    overrides = overrides_from_args(_parse("--data.filters.gopher_min_words", "none"))
    assert overrides == {"data": {"filters": {"gopher_min_words": None}}}


def test_target_modules_keyword_stays_a_keyword():
    recipe = recipe_from_args(_parse("--model.target_modules", "all-linear"))
    assert recipe.model.target_modules == "all-linear"


def test_options_override_the_yaml_and_keep_the_rest(tmp_path):
    base = Recipe().replace(train={"learning_rate": 3e-5}, model={"lora_rank": 64})
    path = tmp_path / "recipe.yaml"
    base.to_yaml(path)
    recipe = recipe_from_args(_parse("--model.lora_rank", "8"), str(path))
    assert recipe.model.lora_rank == 8
    assert recipe.train.learning_rate == pytest.approx(3e-5)


def test_invalid_values_are_all_reported_at_once():
    with pytest.raises(ConfigError) as err:
        recipe_from_args(_parse("--model.lora_rank", "0", "--train.lr_scheduler", "zigzag"))
    message = str(err.value)
    assert "model.lora_rank must be > 0" in message and "train.lr_scheduler must be one of" in message


def test_bad_bool_is_rejected_by_the_parser():
    with pytest.raises(SystemExit):
        _parse("--model.use_rslora", "maybe")


def test_train_command_keeps_short_aliases():
    args = build_parser().parse_args(["train", "--max-steps", "3", "--output-dir", "runs/x", "--model.lora_alpha", "8"])
    recipe = recipe_from_args(args, args.config)
    assert (recipe.train.max_steps, recipe.train.output_dir, recipe.model.lora_alpha) == (3, "runs/x", 8)


def test_export_command_options_come_from_export_config():
    from cptnb.cli_options import config_from_args
    from cptnb.export import ExportConfig

    args = build_parser().parse_args(
        ["export", "--run_dir", "runs/x", "--out_dir", "exports/x", "--dtype", "float16", "--merge", "false"]
    )
    cfg = config_from_args(args, ExportConfig)
    assert (cfg.run_dir, cfg.out_dir, cfg.dtype, cfg.merge, cfg.check) == ("runs/x", "exports/x", "fp16", False, True)


def test_export_command_reports_a_missing_source(capsys):
    from cptnb.cli import main

    assert main(["export", "--out_dir", "exports/x"]) == 2
    assert "set run_dir" in capsys.readouterr().err


def test_plan_command_prints_the_plan_for_the_overridden_recipe(capsys):
    from cptnb.cli import main

    rc = main(["plan", "--model.name", "tiny-llama", "--blocks", "10", "--train.max_steps", "5",
               "--train.per_device_batch_size", "2", "--model.max_seq_len_tokens", "64"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "| tokens per optimizer step | 128 (blocks of 64 tokens) |" in out
    assert "| optimizer steps | 5 " in out and "**lora** (chosen)" in out


def _prepare_args(*argv):
    return build_parser().parse_args(["prepare", *argv])


def test_prepare_options_and_defaults_come_from_the_dataclasses():
    from cptnb.config import DataConfig

    parser = build_parser()
    prepare = next(a for a in parser._actions if a.dest == "command").choices["prepare"]
    options = {s for action in prepare._actions for s in action.option_strings}
    assert all(f"--{p}" in options for p in _leaf_paths(DataConfig(), "data"))
    assert {"--model.name", "--model.max_seq_len_tokens"} <= options and "--model.lora_rank" not in options
    # Unset options keep DataConfig's defaults (the hand-written parser said --replay-share 0.1 here).
    recipe = recipe_from_args(_prepare_args("--data.sources", "my_corpus/", "--data.replay_sources", "en/"))
    assert recipe.data.replay_share == DataConfig().replay_share == 0.0
    assert recipe.data.sources == ["my_corpus/"] and recipe.data.replay_sources == ["en/"]
    assert recipe.data == DataConfig(sources=["my_corpus/"], replay_sources=["en/"])


def test_prepare_keeps_its_old_spellings_and_repeated_list_options_add_up():
    args = _prepare_args("--source", "a/", "--source", "b.jsonl", "--lang", "en", "--replay", "r/",
                         "--replay-share", "0.2", "--eval-tasks", "t/", "--on-error", "skip",
                         "--tokenizer", "tiny-llama", "--block-tokens", "64", "--text-field", "content")
    recipe = recipe_from_args(args, args.config)
    data = recipe.data
    assert (data.sources, data.language) == (["a/", "b.jsonl"], "en")
    assert (data.replay_sources, data.replay_share) == (["r/"], 0.2)
    assert (data.eval_tasks, data.on_error, data.block_tokens, data.text_field) == (["t/"], "skip", 64, "content")
    assert recipe.model.name == "tiny-llama"


def test_prepare_options_override_the_recipe_yaml(tmp_path):
    path = tmp_path / "recipe.yaml"
    Recipe().replace(data={"language": "en", "min_chars": 5}).to_yaml(path)
    args = _prepare_args("--config", str(path), "--data.min_chars", "50")
    recipe = recipe_from_args(args, args.config)
    assert (recipe.data.language, recipe.data.min_chars) == ("en", 50)
    with pytest.raises(ConfigError, match="data.replay_share must be in"):
        recipe_from_args(_prepare_args("--data.replay_share", "2"))
