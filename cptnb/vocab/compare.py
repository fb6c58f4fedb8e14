"""Judging an extension in bits per byte: initialisations before training, and runs with and without it.

Loss per token cannot compare two vocabularies (a token of the extended one
covers more text), so everything here is bits per byte on the same held-out
documents, per document, with paired-bootstrap 95% intervals
(:func:`cptnb.evaluate.compare.paired_bootstrap`).

Example::

    scores = init_comparison(model_cfg, result.extension, result.tokenizer, {"domain": vi, "general": en}, eval_cfg)
    print(init_markdown(scores))
"""

from __future__ import annotations

import gc
from typing import Any

import numpy as np

from cptnb.tables import markdown_table
from cptnb.vocab.init import INIT_METHODS, resize_and_init

_LN2 = float(np.log(2))


def init_comparison(model_cfg, extension, tokenizer, heldout: dict[str, list[str]], eval_cfg,
                    methods: tuple[str, ...] = INIT_METHODS) -> dict[str, dict[str, Any]]:
    """Held-out scores before any training: the base with its own tokenizer, then each init with ``tokenizer``.

    Returns ``{"base": {set: score}, "mean_of_pieces": {...}, ...}`` where each
    score is :func:`cptnb.evaluate.heldout.score_documents`'s (per-document items included).
    """
    from cptnb.evaluate.heldout import score_documents
    from cptnb.vocab.extend import load_base

    out: dict[str, dict[str, Any]] = {}
    model, base_tokenizer = load_base(model_cfg)
    out["base"] = {name: score_documents(model, base_tokenizer, texts, eval_cfg, desc=f"base {name}")
                   for name, texts in heldout.items()}
    for method in methods:
        model, _ = load_base(model_cfg)
        resize_and_init(model, extension, method, seed=model_cfg.seed)
        out[method] = {name: score_documents(model, tokenizer, texts, eval_cfg, desc=f"{method} {name}")
                       for name, texts in heldout.items()}
        del model
        gc.collect()
    return out


def bpb_difference(before: dict[str, Any], after: dict[str, Any], n_boot: int = 10_000, seed: int = 0,
                   confidence: float = 0.95) -> tuple[float, float, float]:
    """(after - before, low, high): the bits-per-byte change of paired documents with a bootstrap interval.

    ``before``/``after`` are score_documents results on the same texts (their
    item ids pair them); the statistic is the ratio of sums, as bits per byte is defined.
    """
    from cptnb.evaluate.compare import paired_bootstrap, percentile_interval

    ids = [i["id"] for i in before["items"]]
    if ids != [i["id"] for i in after["items"]]:
        raise ValueError("the two scores were not measured on the same documents")
    fields = [{k: np.array([float(i[k]) for i in s["items"]]) for k in ("nll_nats", "bytes")} for s in (before, after)]

    def bpb(f, idx):
        return f["nll_nats"][idx].sum(axis=1) / _LN2 / f["bytes"][idx].sum(axis=1)

    samples = paired_bootstrap(fields[0], fields[1], {"bpb": bpb}, n_boot, np.random.default_rng(seed))["bpb"]
    low, high = percentile_interval(samples, confidence)
    return after["bits_per_byte"] - before["bits_per_byte"], low, high


def init_markdown(scores: dict[str, dict[str, Any]]) -> str:
    """One row per initialisation: bits per byte per held-out set, and the change from the base with its interval."""
    sets = list(scores["base"])
    rows = []
    for method, by_set in scores.items():
        row: list[Any] = [method.replace("_", " ") + (" (old tokenizer)" if method == "base" else "")]
        for name in sets:
            row.append(f"{by_set[name]['bits_per_byte']:.4f}")
            if method == "base":
                row.append("")
            else:
                d, low, high = bpb_difference(scores["base"][name], by_set[name])
                row.append(f"{d:+.4f} [{low:+.4f}, {high:+.4f}]")
        rows.append(row)
    header = ["init"] + [h for name in sets for h in (f"{name} bits/byte", "vs base [95% CI]")]
    return markdown_table(header, rows, right=range(1, 1 + 2 * len(sets)))


def step_seconds(events: list[dict[str, Any]]) -> float:
    """Seconds a training call spent inside optimizer steps: its last ``train_step_seconds`` (0.0 with none).

    Held-out evaluation runs between steps, so this is the training cost of a run without its evaluation
    schedule (a plain run's held-out text is more tokens than an extended run's, so it evaluates longer).
    """
    return next((float(e["train_step_seconds"]) for e in reversed(events) if "train_step_seconds" in e), 0.0)


def runs_markdown(runs: dict[str, dict[str, Any]], reference: str) -> str:
    """Runs side by side: training seconds, text seen, held-out bits per byte, and the change against ``reference``.

    ``seconds`` is the time in optimizer steps (:func:`step_seconds`), ``wall_seconds`` (optional) the whole run's.
    """
    sets = list(runs[reference]["scores"])
    rows = []
    for name, run in runs.items():
        wall = f"{run['wall_seconds']:.0f}" if "wall_seconds" in run else ""
        row: list[Any] = [name, f"{run['seconds']:.0f}", wall, run["steps"], f"{run['train_bytes_seen']:,}"]
        for s in sets:
            row.append(f"{run['scores'][s]['bits_per_byte']:.4f}")
            if name == reference:
                row.append("")
            else:
                d, low, high = bpb_difference(runs[reference]["scores"][s], run["scores"][s])
                row.append(f"{d:+.4f} [{low:+.4f}, {high:+.4f}]")
        rows.append(row)
    header = ["run", "training-step seconds", "wall seconds", "steps", "text bytes trained on"] + [
        h for s in sets for h in (f"{s} bits/byte", f"vs {reference} [95% CI]")]
    return markdown_table(header, rows, right=range(1, 5 + 2 * len(sets)))


def approx_bpb_curve(events: list[dict[str, Any]], tokens_per_byte: dict[str, float], x: str = "step",
                     x_offset: float = 0) -> dict[str, list[tuple[float, float]]]:
    """(x, bits per byte) from the periodic held-out loss: loss (nats/token) x tokens per byte / ln 2.

    ``x`` is the event field on the horizontal axis: ``step``, or ``train_step_seconds`` for a curve
    over training time; ``x_offset`` is added to it (an extended run's embeddings-only stage came first).
    An approximation (the packed held-out blocks leave out each set's tail) that
    lets two vocabularies share one axis during training; the final numbers are
    measured exactly, per document.
    """
    curves: dict[str, list[tuple[float, float]]] = {}
    for name, tpb in tokens_per_byte.items():
        key = f"heldout_{name}_loss"
        curves[name] = [(e[x] + x_offset, e[key] * tpb / _LN2) for e in events if key in e and x in e]
    return curves


def gap_at(reference: list[tuple[float, float]], extended: list[tuple[float, float]],
           x: float) -> float | None:
    """extended - reference at ``x``, each curve interpolated linearly; None where either does not reach."""
    values = []
    for curve in (reference, extended):
        xs, ys = zip(*sorted(dict(curve).items())) if curve else ((), ())
        if not xs or not xs[0] <= x <= xs[-1]:
            return None
        values.append(float(np.interp(x, xs, ys)))
    return values[1] - values[0]


def gap_by_step(reference: list[tuple[int, float]], extended: list[tuple[int, float]],
                offset: int = 0) -> list[tuple[int, float]]:
    """(step, extended - reference) at each point of the extended run's curve, on the reference's step axis.

    The extended run's steps are shifted by ``offset`` (its embeddings-only
    steps come first), so its points need not fall on the reference's; the
    reference curve is interpolated linearly between its own points, never
    extrapolated (points outside its range are left out).
    """
    if not reference:
        return []
    xs, ys = zip(*sorted(dict(reference).items()))
    return [(step + offset, value - float(np.interp(step + offset, xs, ys)))
            for step, value in sorted(dict(extended).items()) if xs[0] <= step + offset <= xs[-1]]


def verdict(runs: dict[str, dict[str, Any]], reference: str, extended: str, gaps: list[tuple[int, float]],
            start_gap: float | None = None, time_curves: tuple[list, list] | None = None) -> list[str]:
    """Sentences read off the numbers: which run encodes held-out domain text better at (about) equal time.

    ``gaps`` is :func:`gap_by_step`'s approximate curve; ``start_gap`` the exact
    domain gap before any training (the extended model with its new rows as
    initialised minus the base), when measured; ``time_curves`` the two runs'
    domain curves over training seconds (:func:`approx_bpb_curve` with
    ``x="train_step_seconds"``), for the gap at exactly equal training time.
    """
    ref, ext = runs[reference], runs[extended]
    d, low, high = bpb_difference(ref["scores"]["domain"], ext["scores"]["domain"])
    ratio = ext["seconds"] / max(ref["seconds"], 1e-9)
    if high < 0:
        what = "the extended model encodes held-out domain text better"
    elif low > 0:
        what = "the extended model encodes held-out domain text worse"
    else:
        what = "the difference is within noise (the interval includes 0)"
    lines = [
        f"At {ext['seconds']:.0f} s vs {ref['seconds']:.0f} s of training steps ({ratio:.2f}x; held-out evaluation "
        f"excluded), {what}: domain bits per byte "
        f"{ext['scores']['domain']['bits_per_byte']:.4f} vs {ref['scores']['domain']['bits_per_byte']:.4f} "
        f"({d:+.4f}, 95% CI [{low:+.4f}, {high:+.4f}]).",
    ]
    if "general" in ref["scores"]:
        g, gl, gh = bpb_difference(ref["scores"]["general"], ext["scores"]["general"])
        lines.append(f"General (English) bits per byte: {g:+.4f} [{gl:+.4f}, {gh:+.4f}] for the extended run.")
    steps = ref["steps"]
    if start_gap is not None:
        moved = ("it overtook the plain run" if d < 0 < start_gap else
                 f"{(start_gap - d) / start_gap:.0%} of the start gap closed" if start_gap > 0 else "")
        lines.append(f"Before training the extended model was {start_gap:+.4f} bits per byte from the base; after {steps} "
                     f"steps it is {d:+.4f} from the plain run" + (f" ({moved})." if moved else "."))
    if time_curves is not None:
        at = min(ref["seconds"], ext["seconds"])
        gap = gap_at(*time_curves, at)
        if gap is not None:
            shorter = extended if ext["seconds"] <= ref["seconds"] else reference
            lines.append(f"At equal training time ({at:.0f} s in optimizer steps, where the {shorter} run ended) the "
                         f"held-out curves put the extended run {gap:+.4f} bits per byte from the plain run "
                         "(approximate, from the periodic held-out loss).")
    if len(gaps) >= 2:
        (s0, g0), (s1, g1) = gaps[0], gaps[-1]
        trend = ("shrank: more steps favour the extended run" if g1 < g0 else "grew: more steps favour the plain run")
        lines.append(f"During training the approximate domain gap (extended - plain) went from {g0:+.4f} at step {s0} to "
                     f"{g1:+.4f} at step {s1}; it {trend}.")
    return lines
