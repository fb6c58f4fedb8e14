"""Command-line options generated from the recipe dataclasses (one source of truth).

Every field of every :class:`~cptnb.config.Recipe` section becomes an option
named by its path, e.g. ``--train.learning_rate 1e-4``, ``--model.use_rslora
true``, ``--model.target_modules q_proj v_proj``, ``--data.dedup.threshold
0.5``; its help is the field's help sentence. Options override the recipe YAML
(or the defaults) and the result is validated by the dataclasses themselves, so
every problem is reported at once, exactly as for a YAML file.

Example::

    parser = argparse.ArgumentParser()
    add_recipe_options(parser)
    args = parser.parse_args(["--train.max_steps", "10"])
    recipe = recipe_from_args(args)
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable

import yaml

from cptnb.config import Recipe
from cptnb.configbase import nested_sections

# Short spellings kept for the most used overrides (older docs and scripts use them).
ALIASES = {"train.max_steps": ["--max-steps"], "train.output_dir": ["--output-dir"]}
# `cptnb prepare`'s spellings from before its options were generated; defaults now come from the dataclasses.
PREPARE_ALIASES = {
    "data.sources": ["--source"], "data.language": ["--lang"], "data.text_field": ["--text-field"],
    "data.replay_sources": ["--replay"], "data.replay_share": ["--replay-share"], "data.eval_tasks": ["--eval-tasks"],
    "data.on_error": ["--on-error"], "data.block_tokens": ["--block-tokens"], "model.name": ["--tokenizer"],
}
# What prepare needs of the model section: the tokenizer (name, where it is built) and the block length.
PREPARE_MODEL_FIELDS = ("name", "max_seq_len_tokens", "cache_dir", "seed", "trust_remote_code")
_PREFIX = "recipe:"  # argparse dest prefix, so generated options never clash with a command's own


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _optional(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.strip().lower() in ("none", "null") else convert(text)

    return parse


def _yaml_value(text: str) -> Any:
    return yaml.safe_load(text)


_CONVERTERS: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str, "bool": _bool}


def _argument(field: dataclasses.Field) -> dict[str, Any]:
    """argparse keyword arguments for one dataclass field, from its annotation and help."""
    annotation = str(field.type).replace(" ", "")
    help_text = field.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
    kwargs: dict[str, Any] = {"help": help_text, "default": argparse.SUPPRESS}
    if annotation == "list":  # --x a b, or --x a --x b (the option repeated adds to the list)
        kwargs.update(nargs="+", action="extend", metavar="VALUE")
    elif annotation == "Any":  # e.g. target_modules: a keyword or a list
        kwargs.update(nargs="+", type=_yaml_value, metavar="VALUE")
    elif annotation.endswith("|None") and annotation.removesuffix("|None") in _CONVERTERS:
        base = annotation.removesuffix("|None")
        kwargs.update(type=_optional(_CONVERTERS[base]), metavar=base.upper())
    elif annotation in _CONVERTERS:
        kwargs.update(type=_CONVERTERS[annotation], metavar=annotation.upper())
    else:
        raise TypeError(f"no command-line type for field {field.name!r} annotated {field.type!r}")
    return kwargs


def _option_name(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _add_section(
    parser: argparse.ArgumentParser,
    cls: type,
    path: str,
    only: tuple[str, ...] | None = None,
    aliases: dict[str, list[str]] | None = None,
) -> None:
    title = f"{path} options" if path else "settings"
    group = parser.add_argument_group(title, (cls.__doc__ or "").strip().splitlines()[0])
    aliases = ALIASES if aliases is None else aliases
    nested = nested_sections(cls)
    for field in dataclasses.fields(cls):
        if (only is not None and field.name not in only) or field.name in nested:
            continue
        name = _option_name(path, field.name)
        group.add_argument(f"--{name}", *aliases.get(name, []), dest=_PREFIX + name, **_argument(field))
    for field_name, sub in nested.items():
        if only is None or field_name in only:
            _add_section(parser, sub, _option_name(path, field_name), aliases=aliases)


def add_recipe_options(
    parser: argparse.ArgumentParser,
    sections: tuple[str, ...] = ("data", "model", "train", "eval"),
    only: dict[str, tuple[str, ...]] | None = None,
    aliases: dict[str, list[str]] | None = None,
) -> None:
    """Add ``--<section>.<field>`` options for the given recipe sections to ``parser``.

    ``only`` limits a section to some of its fields (``{"model": ("name",)}``);
    ``aliases`` maps an option (``"data.sources"``) to extra spellings
    (default :data:`ALIASES`).
    """
    for name in sections:
        _add_section(parser, nested_sections(Recipe)[name], name, (only or {}).get(name), aliases)


def add_config_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add ``--<field>`` options for every field of one config dataclass (e.g. ExportConfig)."""
    _add_section(parser, cls, "")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe options actually given on the command line, as a nested dict."""
    nested: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if not dest.startswith(_PREFIX):
            continue
        *parents, leaf = dest[len(_PREFIX) :].split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        if isinstance(value, list) and len(value) == 1 and not isinstance(value[0], str):
            value = value[0]  # an Any-typed field given one YAML value, e.g. a list or a number
        elif isinstance(value, list) and len(value) == 1 and value[0] == "all-linear":
            value = "all-linear"  # the keyword, not a one-element module list
        node[leaf] = value
    return nested


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_from_args(args: argparse.Namespace, cls: type):
    """An instance of ``cls`` from the options :func:`add_config_options` added (validated, all problems at once)."""
    return cls.from_dict(overrides_from_args(args), where="command line")


def recipe_from_args(args: argparse.Namespace, config: str | None = None) -> Recipe:
    """The recipe YAML at ``config`` (or the defaults) with the command-line overrides applied."""
    base = Recipe.from_yaml(config) if config else Recipe()
    return Recipe.from_dict(_merge(base.to_dict(), overrides_from_args(args)), where="command line")
