"""Building blocks for the kit's typed configs (no cptnb imports but errors, so any module can use them).

Every config is a dataclass subclassing :class:`Section`; each field is made
with :func:`option` and carries a one-sentence ``help``; ``problems()`` lists
every invalid value with its fix, and construction raises them all at once.

Sections are frozen: a value is set once, when the section is built, and is
checked then. To change a recipe, make a changed copy with ``replace``, which
is checked exactly like a new section (every problem at once, with the fix)::

    recipe = recipe.replace(train={"max_steps": 40}, data={"dedup": {"threshold": 0.7}})
    train = recipe.train.replace(max_steps=40, learning_rate=1e-4)

Assigning a field (``recipe.train.max_steps = 40``) raises a
:class:`~cptnb.errors.ConfigError` that names the ``replace`` call to write
instead (and the problem with the value, if it has one). Several fields change
together in one ``replace``, so checks that relate two fields (``replay_share``
needs ``replay_sources``) see the finished change, never half of it. Lists are
the one hole: change them by passing a new list, never with ``.append``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from cptnb.errors import ConfigError

_FROZEN = "_cptnb_frozen"  # set in the instance dict once the section is built and checked


def option(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a help sentence (mutable defaults via a factory)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


_NESTED_CACHE: dict[type, dict[str, type]] = {}


def nested_sections(cls: type) -> dict[str, type]:
    """Field name -> Section class, for the fields of ``cls`` that hold a whole section (e.g. ``data.dedup``)."""
    if cls not in _NESTED_CACHE:
        found = {}
        for f in dataclasses.fields(cls):
            if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
                if isinstance(default, Section):
                    found[f.name] = type(default)
        _NESTED_CACHE[cls] = found
    return _NESTED_CACHE[cls]


# Section class -> where it sits in a Recipe ("train", "data.dedup"); filled by cptnb.config, for error messages.
RECIPE_PATHS: dict[type, str] = {}


def replace_hint(cls: type, name: str, value: Any) -> str:
    """The ``replace`` call that changes field ``name`` of a ``cls`` section to ``value``, as a user would write it."""
    path = RECIPE_PATHS.get(cls, "")
    if path == "recipe":
        return f"`recipe = recipe.replace({name}=...)` with a mapping of the fields to change"
    if not path:
        return f"`section = section.replace({name}={value!r})`"
    parts = path.split(".")
    change: str = f"{{{name!r}: {value!r}}}"
    for inner in reversed(parts[1:]):
        change = f"{{{inner!r}: {change}}}"
    own = parts[-1]
    return f"`recipe = recipe.replace({parts[0]}={change})` (or `{own} = {own}.replace({name}={value!r})` alone)"


class Section:
    """Shared behaviour: validation on construction, frozen fields, ``replace``, dict/YAML conversion, help text."""

    def problems(self) -> list[str]:  # pragma: no cover - overridden
        return []

    def __post_init__(self) -> None:
        # Nested sections may arrive as mappings (YAML, replace): build them here, their problems prefixed.
        found: list[str] = []
        for name, cls in nested_sections(type(self)).items():
            value = getattr(self, name)
            if value is None or isinstance(value, dict):
                try:
                    object.__setattr__(self, name, cls.from_dict(value, where=name))
                except ConfigError as err:
                    found += [f"{name}.{p}" for p in err.problems]
            elif not isinstance(value, cls):
                found.append(f"{name} must be a {cls.__name__} or a mapping of its fields, got {type(value).__name__}")
        found += self.problems()
        if found:
            raise ConfigError(found, where=type(self).__name__)
        object.__setattr__(self, _FROZEN, True)

    def __setattr__(self, name: str, value: Any) -> None:
        if not self.__dict__.get(_FROZEN):  # still being built (dataclass __init__, __post_init__)
            object.__setattr__(self, name, value)
            return
        names = [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]
        if name not in names:
            raise ConfigError([f"{name} is not a field of {type(self).__name__}; fields: {', '.join(names)}"],
                              where=type(self).__name__)
        problems: list[str] = []
        try:
            self.replace(**{name: value})
        except ConfigError as err:
            problems += err.problems  # the same problems a section built with this value reports
        problems.append(f"{name} was not changed: {type(self).__name__} is frozen so that every change is checked; "
                        f"write {replace_hint(type(self), name, value)}")
        raise ConfigError(problems, where=type(self).__name__)

    def __delattr__(self, name: str) -> None:
        if self.__dict__.get(_FROZEN):
            raise ConfigError([f"{name} cannot be deleted: {type(self).__name__} is frozen"], where=type(self).__name__)
        object.__delattr__(self, name)

    def replace(self, **changes: Any):
        """A copy with ``changes`` applied, checked like a newly built section (every problem at once).

        A field holding a nested section takes a mapping of that section's own
        changes, which are merged into its current values; the original is
        never modified.

        Example::

            data = DataConfig().replace(replay_share=0.2, replay_sources=["data_samples/en"], dedup={"threshold": 0.7})
        """
        names = [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise ConfigError(
                [f"unknown field {k!r}; known fields: {', '.join(sorted(names))}" for k in unknown],
                where=type(self).__name__,
            )
        return type(self)(**self._changed(changes))

    def _changed(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Constructor arguments: the current values (lists copied) updated with ``changes``, nested mappings merged."""
        values = {
            f.name: list(v) if isinstance(v := getattr(self, f.name), list) else v
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if f.init
        }
        nested = nested_sections(type(self))
        for name, value in changes.items():
            if name in nested and isinstance(value, dict) and isinstance(values.get(name), Section):
                value = values[name]._changed(value)  # built and checked by the new parent, problems prefixed
            values[name] = value
        return values

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, where: str | None = None):
        """Build from a mapping (YAML), naming unknown fields instead of failing with a TypeError."""
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(
                [f"unknown field {k!r}; known fields: {', '.join(sorted(names))}" for k in unknown],
                where=where or cls.__name__,
            )
        return cls(**values)

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> help sentence, for docs and the CLI."""
        return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}  # type: ignore[arg-type]


# One dtype vocabulary for model weights, mixed precision and exports: the short names that TRL,
# accelerate and DeepSpeed flags use. torch's long names (and a few common ones) are accepted and
# normalised, so recipes written with ``dtype: bfloat16`` still load.
DTYPE_NAMES = ("bf16", "fp16", "fp32")
DTYPE_ALIASES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "float32": "fp32", "float": "fp32"}
BYTES_PER_VALUE = {"bf16": 2, "fp16": 2, "fp32": 4}


def canonical_dtype(value: Any) -> Any:
    """The canonical spelling of a dtype name: ``canonical_dtype("bfloat16") == "bf16"``.

    Case, surrounding spaces and a ``torch.`` prefix are ignored; anything that
    is not a string, or not a known spelling, comes back unchanged (lower-cased)
    so that validation names it.
    """
    if not isinstance(value, str):
        return value
    name = value.strip().lower().removeprefix("torch.")
    return DTYPE_ALIASES.get(name, name)


def choice(problems: list[str], name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        problems.append(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def positive(problems: list[str], name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        problems.append(f"{name} must be {bound}, got {value!r}")
