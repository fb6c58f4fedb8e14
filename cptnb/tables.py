"""The kit's one Markdown-table writer (model card, reports, planner, notebooks).

Cells are formatted one way everywhere: floats to ``digits`` decimals and ints
with thousands separators, dicts as ``key: value`` lists, ``None`` as an empty
cell, and ``|`` / newlines escaped so a value can never break the table. Callers
that need a special format (a delta with its interval, "+1.2%") pass the text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_cell(value: Any, digits: int = 4) -> str:
    """One table cell as text (see the module docstring)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if _is_number(value):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {format_cell(v, digits)}" for k, v in value.items())
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(
    header: Iterable[str], rows: Iterable[Iterable[Any]], right: Iterable[int] = (), digits: int = 4
) -> str:
    """A GitHub-flavoured Markdown table.

    Columns holding only numbers, and the column indexes in ``right`` (numbers
    already formatted as text), are right-aligned.

    Example::

        markdown_table(["set", "bits per byte"], [["vi", 2.1111], ["en", 1.0032]])
    """
    header = list(header)
    rows = [list(r) for r in rows]
    right = set(right)
    numeric = [
        i in right or (bool(rows) and all(_is_number(r[i]) or r[i] is None for r in rows)) for i in range(len(header))
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---:" if n else "---" for n in numeric) + " |",
    ]
    lines += ["| " + " | ".join(format_cell(v, digits) for v in row) + " |" for row in rows]
    return "\n".join(lines)
