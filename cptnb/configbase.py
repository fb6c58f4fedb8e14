"""Building blocks for the kit's typed configs (no cptnb imports but errors, so any module can use them).

Every config is a dataclass subclassing :class:`Section`; each field is made
with :func:`option` and carries a one-sentence ``help``; ``problems()`` lists
every invalid value with its fix, and construction raises them all at once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from cptnb.errors import ConfigError


def option(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with a help sentence (mutable defaults via a factory)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


class Section:
    """Shared behaviour: validation on construction, dict/YAML conversion, help text."""

    def problems(self) -> list[str]:  # pragma: no cover - overridden
        return []

    def __post_init__(self) -> None:
        found = self.problems()
        if found:
            raise ConfigError(found, where=type(self).__name__)

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
