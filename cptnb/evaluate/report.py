"""Put base and adapted side by side in files: a table, a chart and a retention sentence.

:func:`write_comparison` renders the rows of
:func:`~cptnb.evaluate.compare.compare_results` as ``comparison.json``,
``comparison.md`` (task | base | adapted | delta [95% CI], subjects, held-out
rows, generations side by side), ``comparison.png`` and a retention sentence.
:func:`write_before_after` is the same for two :func:`~cptnb.evaluate.heldout.measure`
outputs. Nothing here scores a model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cptnb.evaluate.compare import Retention, Row, compare_results, primary_rows, retention
from cptnb.evaluate.results import fmt, generations_markdown, heldout_markdown, load_results
from cptnb.retention import RetentionThreshold
from cptnb.tables import markdown_table

log = logging.getLogger(__name__)

_FEW_ITEMS = 20  # below this a percentile bootstrap interval is noticeably too narrow


def write_before_after(
    out_dir: str | Path, before: dict[str, Any], after: dict[str, Any], title: str = "", n_boot: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """Write before_after.json / .md / .png into ``out_dir``; return the JSON payload.

    ``before``/``after`` are :func:`measure` outputs (or full results documents).
    The payload's ``comparison`` holds one row per (set, metric), ``retention``
    the one-sentence verdict, ``before``/``after`` the two measurements.
    """
    return write_comparison(
        out_dir, before, after, title=title, n_boot=n_boot, seed=seed, stem="before_after", inputs_as=("before", "after")
    )


def scores_markdown(measurement: dict[str, Any]) -> str:
    """One measurement as a table (held-out set x metric), plus its generations."""
    return heldout_markdown(measurement["heldout"]) + generations_markdown(measurement.get("generations", []))


# --------------------------------------------------------------------------- comparison: table, chart, files


def _delta_text(r: Row) -> str:
    text = f"{r.delta:+.2f}" if "perplexity" in r.metric else f"{r.delta:+.4f}"
    if r.ci_low is None:
        return f"{text} [n/a]"
    digits = 2 if "perplexity" in r.metric else 4
    star = " *" if r.verdict in ("better", "worse") else ""
    return f"{text} [{r.ci_low:+.{digits}f}, {r.ci_high:+.{digits}f}]{star}"


def _who(doc: dict[str, Any]) -> str:
    meta = doc.get("meta") or {}
    return (meta.get("model") or "?") + (f" + {meta['adapter']}" if meta.get("adapter") else "")


def comparison_markdown(rows: list[Row], summary: Retention, base: dict, adapted: dict, title: str = "", n_boot: int = 0) -> str:
    """The comparison as markdown: task table (with subjects), held-out table, retention, generations."""
    conf = rows[0].confidence
    md = [f"# {title or 'Before / after'}", ""]
    if base.get("meta") or adapted.get("meta"):
        md += [f"base: {_who(base)} · adapted: {_who(adapted)}", ""]
    md += [summary.sentence, ""]
    tasks = [r for r in rows if r.kind in ("task", "subject")]
    if tasks:
        grouped = sorted({r.set for r in rows if r.kind == "subject"})
        table = [
            [
                f"{r.label} (mean)" if r.kind == "task" and r.set in grouped else r.label,
                r.metric, r.n or "", fmt(r.base, r.metric), fmt(r.adapted, r.metric), _delta_text(r),
            ]
            for r in tasks
        ]
        header = ["task", "metric", "n", "base", "adapted", f"delta [{conf:.0%} CI]"]
        md += ["## Tasks", "", markdown_table(header, table, right=(2, 3, 4)), ""]
        for name in grouped:
            md += [f"{name} (mean) is the size-weighted mean of its subjects (lm-eval's group default), i.e. pooled over items.", ""]
    held = [r for r in rows if r.kind == "heldout"]
    if held:
        table = [
            [r.label, r.metric, r.n or "", fmt(r.base, r.metric), fmt(r.adapted, r.metric), _delta_text(r),
             f"{r.relative_change:+.1%}"]
            for r in held
        ]
        header = ["set", "metric", "docs", "base", "adapted", f"delta [{conf:.0%} CI]", "change"]
        md += ["## Held-out text", "", markdown_table(header, table, right=(2, 3, 4, 6))]
    md += [
        "",
        (
            f"Intervals: paired bootstrap over items ({n_boot:,} resamples), percentile; * = excludes 0; "
            "n/a = the files hold no per-item values for this metric."
        ),
    ]
    few = sorted({r.label for r in rows if r.ci_low is not None and (r.n or 0) < _FEW_ITEMS})
    if few:
        md.append(f"Fewer than {_FEW_ITEMS} items behind {', '.join(few)}: percentile intervals from so few items come out too narrow.")
    gens = generations_side_by_side(base.get("generations") or [], adapted.get("generations") or [])
    if gens:
        md += ["", "## Generations (greedy)", "", gens]
    return "\n".join(md) + "\n"


def generations_side_by_side(base: list[dict[str, str]], adapted: list[dict[str, str]]) -> str:
    """Each prompt with the base and the adapted output under it (matched by prompt)."""
    after = {g["prompt"]: g["output"] for g in adapted}
    return "\n".join(
        f"**Prompt:** {g['prompt']}\n\n- base: {g['output']}\n- adapted: {after[g['prompt']]}\n"
        for g in base
        if g["prompt"] in after
    )


def comparison_chart(rows: list[Row], title: str = ""):
    """Grouped bars, base vs adapted: one panel per task (primary metric, ± stderr), one for held-out bits per byte."""
    from matplotlib.figure import Figure  # no pyplot: works headless and leaks no global figures

    panels = [
        (primary_rows(rows), "score (higher is better)"),
        ([r for r in rows if r.kind == "heldout" and r.metric == "bits_per_byte"], "bits per byte (lower is better)"),
    ]
    panels = [(chosen, ylabel) for chosen, ylabel in panels if chosen]
    fig = Figure(figsize=(max(6.0, 1.2 * sum(len(c) for c, _ in panels) + 2), 3.8), dpi=100)
    axes = fig.subplots(1, len(panels), squeeze=False, width_ratios=[len(c) + 1 for c, _ in panels])[0]
    width = 0.38
    for ax, (chosen, ylabel) in zip(axes, panels):
        xs = np.arange(len(chosen))
        for shift, side in ((-width / 2, "base"), (width / 2, "adapted")):
            errs = [getattr(r, f"{side}_stderr") for r in chosen]
            yerr = [e if e is not None else 0.0 for e in errs] if any(e is not None for e in errs) else None
            bars = ax.bar(xs + shift, [getattr(r, side) for r in chosen], width, yerr=yerr, capsize=3, label=side)
            ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
        ticks = [r.label if r.metric in ("acc", "bits_per_byte") else f"{r.label}\n{r.metric}" for r in chosen]
        ax.set_xticks(xs, ticks, rotation=20 if len(chosen) > 3 else 0, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.margins(y=0.15)
    axes[0].legend(fontsize=8)
    fig.suptitle(title or "Before / after continued pretraining", fontsize=10)
    fig.tight_layout()
    return fig


def write_comparison(
    out_dir: str | Path,
    base: dict[str, Any] | str | Path,
    adapted: dict[str, Any] | str | Path,
    title: str = "",
    n_boot: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
    stem: str = "comparison",
    inputs_as: tuple[str, str] | None = None,
    threshold: RetentionThreshold | None = None,
) -> dict[str, Any]:
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` into ``out_dir``; return the JSON payload.

    ``base``/``adapted`` are results documents or paths to ``results.json``.
    ``inputs_as`` stores the two documents in the JSON under these keys.
    ``threshold``: the declared retention threshold the verdict is judged against
    (``within_threshold`` in the payload; None when none is declared).

    Example::

        payload = write_comparison("runs/compare", "runs/base/results.json", "runs/adapted/results.json")
        print(payload["retention"])
    """
    names = tuple(str(d) if isinstance(d, (str, Path)) else label for d, label in ((base, "base"), (adapted, "adapted")))
    base, adapted = (load_results(d) if isinstance(d, (str, Path)) else d for d in (base, adapted))
    rows = compare_results(base, adapted, n_boot=n_boot, seed=seed, confidence=confidence, names=names)
    summary = retention(rows, confidence, threshold)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {ext: out / f"{stem}.{ext}" for ext in ("json", "md", "png")}
    payload = {
        "title": title,
        "base_meta": base.get("meta"),
        "adapted_meta": adapted.get("meta"),
        "bootstrap": {"n_boot": n_boot, "seed": seed, "confidence": confidence, "method": "paired percentile"},
        "comparison": [r.to_dict() for r in rows],
        "retention": summary.sentence,
        "forgetting": summary.forgetting,
        "threshold": summary.threshold,
        "within_threshold": summary.within_threshold,
        "retention_detail": summary.to_dict(),
        "files": {ext: str(p) for ext, p in files.items()},
    }
    if inputs_as:
        payload.update({inputs_as[0]: base, inputs_as[1]: adapted})
    files["json"].write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
    files["md"].write_text(comparison_markdown(rows, summary, base, adapted, title, n_boot), encoding="utf-8")
    comparison_chart(rows, title).savefig(files["png"])
    log.info("wrote %s, %s and %s", *files.values())
    return payload
