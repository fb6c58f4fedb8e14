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
READ_REASONS = {
    "undecodable_file", "undecodable_bytes", "empty_file", "broken_json", "missing_text_field",
    "non_string_text_field",
}


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


# What to loosen when a reason dropped much of the corpus (quality-filter reasons share one entry, below).
LOOSEN = {
    "too_short": "data.min_chars",
    "wrong_language": "data.langid (or data.language)",
    "low_language_confidence": "data.langid.min_confidence",
    "exact_duplicate": "data.dedup.exact",
    "near_duplicate": "data.dedup (threshold, or near: false)",
    "contaminated": "data.decontam",
    "undecodable_bytes": "re-save the files as UTF-8",
    "undecodable_file": "re-save the files as UTF-8",
    "broken_json": "fix the broken JSON lines",
    "missing_text_field": "data.text_field",
    "non_string_text_field": "data.text_field",
    "empty_file": "remove or fill the empty files",
}
QUALITY_PREFIXES = ("gopher_", "c4_", "fineweb_")


def too_small_message(report: dict[str, Any], report_path: str | Path, shown_reasons: int = 3) -> str:
    """Why ``report`` (of ``prepare``) fills no training block, and what to change; for the error it raises."""
    total, tokens, heldout = report["total"], report["tokens"], report["heldout"]
    block, tokens_in = tokens["block_size"], tokens["tokens_in"]
    drops = sorted(total["dropped"].items(), key=lambda kv: (-kv[1], kv[0]))
    survived = f"{total['docs_kept']:,} of {total['docs_in']:,} document(s) survived preparation"
    if tokens["docs"]:
        left = (f"the {tokens['docs']:,} left for training hold {tokens_in:,} tokens (EOS included), fewer than "
                f"one block of {block} tokens")
    else:
        left = "none is left for training"
    lines = [f"too little text to train on: {survived}, and {left}, so no training block was packed."]
    if drops:
        lines.append("Dropped most: " + ", ".join(f"{reason} {n:,}" for reason, n in drops[:shown_reasons]) + ".")
    held = heldout["domain_docs"] + heldout["general_docs"]
    if held:
        lines.append(f"Held out for evaluation: {held:,} document(s) (data.heldout_share).")
    fixes = ["add more text to data.sources"]
    if tokens_in >= 2:
        fits = 1 << (tokens_in.bit_length() - 1)  # the longest power-of-two block that the tokens fill once
        fixes.append(f"shorten the block: data.block_tokens {fits} or less (now {block})")
    loosen = []
    for reason, _ in drops[:shown_reasons]:
        knob = "data.filters" if reason.startswith(QUALITY_PREFIXES) else LOOSEN.get(reason)
        if knob and knob not in loosen:
            loosen.append(knob)
    if loosen:
        fixes.append("loosen what dropped most: " + "; ".join(loosen))
    lines.append("To go on: " + ", or ".join(fixes) + ".")
    lines.append(f"Every count is in {report_path} (and the funnel beside it).")
    return "\n".join(lines)


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
