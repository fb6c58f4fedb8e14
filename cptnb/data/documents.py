"""The record every stage passes along, and the counter every stage reports to."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Document:
    """One document: its text, the file it came from, and where in that file."""

    text: str
    source: str
    id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    tokens: list[int] | None = None  # filled by a stage that already tokenized it (mix), reused by pack


class DropCounter:
    """Counts dropped documents per source and reason, so nothing disappears silently."""

    def __init__(self) -> None:
        self.docs: Counter[tuple[str, str]] = Counter()
        self.chars: Counter[tuple[str, str]] = Counter()

    def drop(self, source: str, reason: str, chars: int = 0) -> None:
        self.docs[(source, reason)] += 1
        self.chars[(source, reason)] += chars

    def by_reason(self, source: str | None = None) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (src, reason), n in self.docs.items():
            if source is None or src == source:
                out[reason] += n
        return dict(out)

    @property
    def total(self) -> int:
        return sum(self.docs.values())
