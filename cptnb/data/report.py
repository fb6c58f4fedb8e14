"""Accounting for the corpus pipeline: what each stage kept, per source, and why the rest went.

A :class:`Tap` is inserted after each stage and counts the documents and
characters that pass it, per source. Together with the :class:`DropCounter`
this gives ``report.json`` (``docs_in == docs_kept + sum(dropped)`` for every
source, checked before writing) and the funnel chart.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cptnb.data.documents import Document, DropCounter


class Tap:
    """Pass-through counter of documents and characters per source."""

    def __init__(self, name: str):
        self.name = name
        self.docs: Counter[str] = Counter()
        self.chars: Counter[str] = Counter()

    def __call__(self, docs: Iterable[Document]) -> Iterator[Document]:
        for doc in docs:
            self.docs[doc.source] += 1
            self.chars[doc.source] += len(doc.text)
            yield doc


# Drop reasons of records that never became documents, so no Tap counted them.
READ_REASONS = {"undecodable_file", "empty_file", "broken_json", "missing_text_field", "non_string_text_field"}


def source_report(first: Tap, last: Tap, drops: DropCounter) -> dict[str, dict[str, Any]]:
    """Per source: docs/chars in and kept, and drops by reason.

    ``first`` counts what was read, ``last`` what survived every stage. Documents
    that never parsed (broken lines, empty files) appear only in ``drops``, and
    replay documents the mix did not need (``replay_surplus``) passed ``last``
    but are not kept.
    """
    out: dict[str, dict[str, Any]] = {}
    for source in sorted(set(first.docs) | {src for src, _ in drops.docs}):
        dropped = dict(sorted(drops.by_reason(source).items()))  # the same order whatever the workers did
        unparsed = sum(n for reason, n in dropped.items() if reason in READ_REASONS)
        surplus_docs = drops.docs[(source, "replay_surplus")]
        surplus_chars = drops.chars[(source, "replay_surplus")]
        out[source] = {
            "docs_in": first.docs[source] + unparsed,
            "docs_kept": last.docs[source] - surplus_docs,
            "chars_in": first.chars[source],
            "chars_kept": last.chars[source] - surplus_chars,
            "dropped": dropped,
        }
    return out


def totals(per_source: dict[str, dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {"docs_in": 0, "docs_kept": 0, "chars_in": 0, "chars_kept": 0, "dropped": Counter()}
    for entry in per_source.values():
        for key in ("docs_in", "docs_kept", "chars_in", "chars_kept"):
            total[key] += entry[key]
        total["dropped"].update(entry["dropped"])
    total["dropped"] = dict(sorted(total["dropped"].items()))
    return total


def check_accounting(per_source: dict[str, dict[str, Any]]) -> None:
    """Raise if any document is unaccounted for: that would be a pipeline bug, not a user error."""
    for source, e in per_source.items():
        if e["docs_in"] != e["docs_kept"] + sum(e["dropped"].values()):
            raise AssertionError(f"accounting broken for {source}: {e}")


def funnel(taps: list[Tap]) -> dict[str, dict[str, list[int]]]:
    """Per source: documents and characters after each stage, in stage order."""
    out: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"docs": [], "chars": []})
    sources = sorted({s for tap in taps for s in tap.docs})
    for source in sources:
        for tap in taps:
            out[source]["docs"].append(tap.docs[source])
            out[source]["chars"].append(tap.chars[source])
    return dict(out)


def draw_funnel(stages: list[str], per_source: dict[str, dict[str, list[int]]], path: str | Path) -> None:
    """Two panels (documents, characters) with one line per source across the stages."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    for ax, key in zip(fig.subplots(1, 2), ("docs", "chars")):
        for source, counts in per_source.items():
            ax.plot(stages, counts[key], marker="o", label=Path(source).name)
        ax.set_title(f"{'documents' if key == 'docs' else 'characters'} kept after each stage")
        ax.tick_params(axis="x", rotation=30)
        ax.set_ylim(bottom=0)
    fig.axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
