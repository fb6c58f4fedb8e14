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
from cptnb.configbase import Section

# Short spellings kept for the most used overrides (older docs and scripts use them).
ALIASES = {"train.max_steps": ["--max-steps"], "train.output_dir": ["--output-dir"]}
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
    if annotation == "list":
        kwargs.update(nargs="+", metavar="VALUE")
    elif annotation == "Any":  # e.g. target_modules: a keyword or a list
        kwargs.update(nargs="+", type=_yaml_value, metavar="VALUE")
    elif annotation.endswith("|None") and annotation[: -len("|None")] in _CONVERTERS:
        kwargs.update(type=_optional(_CONVERTERS[annotation[: -len("|None")]]), metavar=annotation[: -len("|None")].upper())
    elif annotation in _CONVERTERS:
        kwargs.update(type=_CONVERTERS[annotation], metavar=annotation.upper())
    else:
        raise TypeError(f"no command-line type for field {field.name!r} annotated {field.type!r}")
    return kwargs


def _nested_section(field: dataclasses.Field) -> type | None:
    if field.default_factory is dataclasses.MISSING:  # type: ignore[misc]
        return None
    default = field.default_factory()  # type: ignore[misc]
    return type(default) if isinstance(default, Section) else None


def _option_name(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _add_section(parser: argparse.ArgumentParser, cls: type, path: str) -> None:
    title = f"{path} options" if path else "settings"
    group = parser.add_argument_group(title, (cls.__doc__ or "").strip().splitlines()[0])
    nested = []
    for field in dataclasses.fields(cls):
        name = _option_name(path, field.name)
        sub = _nested_section(field)
        if sub is not None:
            nested.append((sub, name))
            continue
        group.add_argument(f"--{name}", *ALIASES.get(name, []), dest=_PREFIX + name, **_argument(field))
    for sub, name in nested:
        _add_section(parser, sub, name)


def add_recipe_options(parser: argparse.ArgumentParser, sections: tuple[str, ...] = ("data", "model", "train", "eval")) -> None:
    """Add ``--<section>.<field>`` options for the given recipe sections to ``parser``."""
    defaults = Recipe()
    for name in sections:
        _add_section(parser, type(getattr(defaults, name)), name)


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
