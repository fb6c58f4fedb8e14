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
    base = Recipe()
    base.train.learning_rate = 3e-5
    base.model.lora_rank = 64
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
