"""Measure a model, then put base and adapted side by side.

:func:`measure` gives, for each held-out set (e.g. ``domain`` = Vietnamese,
``general`` = English), loss, perplexity and bits per byte, plus greedy
generations for a few prompts. :func:`write_before_after` turns two such
measurements into ``before_after.json``, ``before_after.md`` and a chart: the
domain gain and the general change (forgetting) in one place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cptnb.config import EvalConfig
from cptnb.evaluate.generate import generate
from cptnb.evaluate.perplexity import score_texts

METRICS = ("loss", "perplexity", "bits_per_byte")  # lower is better for all three


def measure(model, tokenizer, heldout: dict[str, list[str]], cfg: EvalConfig | None = None) -> dict[str, Any]:
    """Scores per held-out set and generations for ``cfg.prompts``.

    Example::

        before = measure(model, tok, {"domain": vi_texts, "general": en_texts}, EvalConfig(prompts=["Hà Nội là"]))
        before["heldout"]["domain"]["bits_per_byte"]
    """
    cfg = cfg or EvalConfig()
    scores = {
        name: score_texts(
            model, tokenizer, texts, cfg.window_tokens, cfg.stride_tokens, cfg.batch_size, desc=f"held-out {name}"
        ).to_dict()
        for name, texts in heldout.items()
    }
    generations = generate(model, tokenizer, cfg.prompts, cfg.max_new_tokens) if cfg.prompts else []
    return {"heldout": scores, "generations": [{"prompt": p, "output": o} for p, o in zip(cfg.prompts, generations)]}


def evenly(texts: list[str], n: int) -> list[str]:
    """``n`` texts spread evenly over the list (all of them if n <= 0 or n >= len)."""
    if n <= 0 or n >= len(texts):
        return list(texts)
    return [texts[i * len(texts) // n] for i in range(n)]


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of (set, metric, base, adapted, delta, relative change) for every shared score."""
    rows = []
    for name, base_scores in before["heldout"].items():
        adapted_scores = after["heldout"].get(name)
        if adapted_scores is None:
            continue
        for metric in METRICS:
            base, adapted = base_scores[metric], adapted_scores[metric]
            rows.append(
                {
                    "set": name,
                    "metric": metric,
                    "base": base,
                    "adapted": adapted,
                    "delta": adapted - base,
                    "relative_change": (adapted - base) / base if base else float("nan"),
                }
            )
    return rows


def retention_line(rows: list[dict[str, Any]], domain: str = "domain", general: str = "general") -> str:
    """One sentence: how much the domain improved and what happened to general text (bits per byte)."""
    by = {(r["set"], r["metric"]): r for r in rows}
    d, g = by.get((domain, "bits_per_byte")), by.get((general, "bits_per_byte"))
    if not d:
        return ""
    text = f"Held-out {domain} bits per byte {d['base']:.4f} -> {d['adapted']:.4f} ({100 * d['relative_change']:+.1f}%)"
    if g:
        verdict = "forgetting" if g["delta"] > 0 else "no forgetting"
        text += f"; {general} {g['base']:.4f} -> {g['adapted']:.4f} ({100 * g['relative_change']:+.1f}%, {verdict})"
    return text + "."


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| set | metric | base | adapted | change |", "| --- | --- | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['metric']} | {r['base']:.4f} | {r['adapted']:.4f} | {100 * r['relative_change']:+.1f}% |"
        )
    return "\n".join(lines)


def before_after_chart(rows: list[dict[str, Any]], metric: str = "bits_per_byte", title: str = ""):
    """Grouped bars, base vs adapted, one group per held-out set (lower is better)."""
    from matplotlib.figure import Figure

    chosen = [r for r in rows if r["metric"] == metric]
    fig = Figure(figsize=(6, 3.6), dpi=100)
    ax = fig.subplots()
    xs = range(len(chosen))
    width = 0.38
    base_bars = ax.bar([x - width / 2 for x in xs], [r["base"] for r in chosen], width, label="base")
    adapted_bars = ax.bar([x + width / 2 for x in xs], [r["adapted"] for r in chosen], width, label="adapted")
    ax.bar_label(base_bars, fmt="%.3f", fontsize=8)
    ax.bar_label(adapted_bars, fmt="%.3f", fontsize=8)
    ax.set_xticks(list(xs), [f"held-out {r['set']}" for r in chosen])
    ax.set_ylabel(f"{metric.replace('_', ' ')} (lower is better)")
    ax.set_title(title or f"Before / after continued pretraining: {metric.replace('_', ' ')}")
    ax.legend()
    fig.tight_layout()
    return fig


def generations_markdown(before: dict[str, Any], after: dict[str, Any]) -> str:
    parts = []
    for b, a in zip(before.get("generations", []), after.get("generations", [])):
        parts.append(f"**Prompt:** {b['prompt']}\n\n- base: {b['output']}\n- adapted: {a['output']}\n")
    return "\n".join(parts)


def write_before_after(out_dir: str | Path, before: dict[str, Any], after: dict[str, Any], title: str = "") -> dict[str, Any]:
    """Write before_after.json / .md / .png into ``out_dir``; return the JSON payload."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = compare(before, after)
    payload = {"before": before, "after": after, "comparison": rows, "retention": retention_line(rows)}
    (out / "before_after.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
    md = [f"# {title or 'Before / after'}", "", markdown_table(rows), "", payload["retention"], ""]
    gens = generations_markdown(before, after)
    if gens:
        md += ["## Generations (greedy)", "", gens]
    (out / "before_after.md").write_text("\n".join(md), encoding="utf-8")
    before_after_chart(rows, title=title).savefig(out / "before_after.png")
    return payload


def scores_markdown(measurement: dict[str, Any]) -> str:
    """One measurement as a table (held-out set x metric), plus its generations."""
    lines = ["| held-out set | loss | perplexity | bits per byte | tokens | bytes |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, s in measurement["heldout"].items():
        lines.append(f"| {name} | {s['loss']:.4f} | {s['perplexity']:.2f} | {s['bits_per_byte']:.4f} | {s['tokens']:,} | {s['bytes']:,} |")
    for g in measurement.get("generations", []):
        lines.append(f"\n**{g['prompt']}** → {g['output']}")
    return "\n".join(lines)
