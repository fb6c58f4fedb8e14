"""The forgetting trade-off: domain gain against general regression, per remedy, with its Pareto front.

Each :class:`FrontierPoint` is one model measured on the same held-out sets as
the base: a training run at some replay share, or a run's weights interpolated
toward the base by ``alpha`` (:mod:`cptnb.models.interpolate`). Its two numbers
are relative changes of bits per byte against the base, each with a 95%
paired-bootstrap interval over the held-out documents:

- ``domain_gain``: how much cheaper held-out domain text became (above 0 is learning);
- ``general_change``: how much dearer held-out general text became (above 0 is forgetting).

:func:`pareto_front` marks the points no other point beats on both;
:func:`remedy_goal` asks whether a remedy keeps most of the gain for a fraction
of the regression; :func:`recommend` picks the point to ship against a
regression threshold declared in advance; :func:`write_frontier` writes the
chart, the table and the JSON.

Example::

    points = [point_from_measurements("replay 0%", 0.0, 1.0, before, after)]
    write_frontier("runs/forgetting", points, max_general_regression=0.01)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cptnb.evaluate.compare import percentile_interval
from cptnb.tables import markdown_table

_LN2 = math.log(2)


@dataclass
class FrontierPoint:
    """One measured model on the trade-off chart (relative changes against the base, in fractions)."""

    name: str  # e.g. "replay 10%" or "replay 0% · alpha 0.5"
    replay_share: float  # replay share of the training run the weights come from
    alpha: float  # weight interpolation toward the base: 1 = the run as trained, 0 = the base
    domain_gain: float  # (before - after) / before of held-out domain bits per byte; > 0 is learning
    general_change: float  # (after - before) / before of held-out general bits per byte; > 0 is forgetting
    domain_ci: tuple[float, float]  # 95% interval of domain_gain
    general_ci: tuple[float, float]  # 95% interval of general_change
    bits_per_byte: dict[str, float] = field(default_factory=dict)  # held-out set -> after
    train_seconds: float = 0.0  # 0 for an interpolated point: it costs evaluation only
    pareto: bool = False

    @property
    def kind(self) -> str:
        """'run' (as trained), 'interpolated' (0 < alpha < 1) or 'base' (alpha 0)."""
        return "run" if self.alpha == 1 else ("base" if self.alpha == 0 else "interpolated")

    @property
    def forgets_clearly(self) -> bool:
        """True when the whole interval of the general change lies above zero."""
        return self.general_ci[0] > 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind, "forgets_clearly": self.forgets_clearly}


def _arrays(measurement: dict[str, Any], heldout: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    items = measurement["heldout"][heldout]["items"]
    return ([d["id"] for d in items], np.array([d["nll_nats"] for d in items], dtype=float),
            np.array([d["bytes"] for d in items], dtype=float))


def relative_change(before: dict[str, Any], after: dict[str, Any], heldout: str, n_boot: int = 4000,
                    seed: int = 0, confidence: float = 0.95) -> tuple[float, tuple[float, float]]:
    """(after / before - 1 of bits per byte on ``heldout``, its paired-bootstrap interval).

    ``before`` and ``after`` are :func:`cptnb.evaluate.heldout.measure` results
    with per-document items over the same documents; one resample of documents
    is applied to both, and bits per byte is a ratio of sums in each resample.
    """
    ids_b, nll_b, bytes_b = _arrays(before, heldout)
    ids_a, nll_a, _ = _arrays(after, heldout)
    if ids_b != ids_a:
        raise ValueError(f"held-out {heldout}: before and after scored different documents; measure both on the "
                         "same texts")
    point = nll_a.sum() / nll_b.sum() - 1  # the byte counts are the same documents': they cancel
    idx = np.random.default_rng(seed).integers(0, len(ids_b), size=(n_boot, len(ids_b)))
    samples = nll_a[idx].sum(axis=1) / nll_b[idx].sum(axis=1) - 1
    return float(point), percentile_interval(samples, confidence)


def point_from_measurements(name: str, replay_share: float, alpha: float, before: dict[str, Any],
                            after: dict[str, Any], train_seconds: float = 0.0, domain: str = "domain",
                            general: str = "general", n_boot: int = 4000, seed: int = 0) -> FrontierPoint:
    """A :class:`FrontierPoint` from the base's and this model's :func:`~cptnb.evaluate.heldout.measure` results."""
    dom, (dom_low, dom_high) = relative_change(before, after, domain, n_boot, seed)
    gen, gen_ci = relative_change(before, after, general, n_boot, seed)
    bits = {name_: scores["bits_per_byte"] for name_, scores in after["heldout"].items()}
    return FrontierPoint(name, replay_share, alpha, -dom, gen, (-dom_high, -dom_low), gen_ci, bits, train_seconds)


def pareto_front(points: list[FrontierPoint]) -> list[FrontierPoint]:
    """Mark (``pareto=True``) and return the points that no other point beats on both axes.

    A point is dominated when another has at least its domain gain and at most
    its general change, and is strictly better on one of them.
    """
    for p in points:
        p.pareto = not any(
            q is not p and q.domain_gain >= p.domain_gain and q.general_change <= p.general_change
            and (q.domain_gain > p.domain_gain or q.general_change < p.general_change)
            for q in points
        )
    return sorted((p for p in points if p.pareto), key=lambda p: p.domain_gain)


def no_remedy_point(points: list[FrontierPoint]) -> FrontierPoint:
    """The run without any remedy: no replay, alpha 1 (the one every remedy is judged against)."""
    found = [p for p in points if p.replay_share == 0 and p.alpha == 1]
    if not found:
        raise ValueError("the frontier needs the run without remedy (replay share 0, alpha 1)")
    return found[0]


@dataclass
class RemedyGoal:
    """Does a remedy keep ``keep_gain`` of the no-remedy domain gain with at most ``max_regression`` of its regression?"""

    keep_gain: float
    max_regression: float
    reference: str  # name of the no-remedy point
    reference_forgets_clearly: bool
    meeting: list[str]  # names of the remedy points that meet it

    @property
    def met(self) -> bool:
        return bool(self.meeting)

    def sentence(self) -> str:
        goal = (f"a remedy that keeps at least {self.keep_gain:.0%} of the domain gain of '{self.reference}' with at "
                f"most {self.max_regression:.0%} of its general regression")
        if not self.reference_forgets_clearly:
            return (f"'{self.reference}' did not forget beyond its 95% interval, so there is no regression for a "
                    "remedy to remove on this data and setting.")
        if self.met:
            return f"Goal met: {', '.join(self.meeting)} {'is' if len(self.meeting) == 1 else 'are'} {goal}."
        return f"No point on this frontier is {goal}: on this data, every remedy costs more gain than that."


def remedy_goal(points: list[FrontierPoint], keep_gain: float = 0.8, max_regression: float = 0.5) -> RemedyGoal:
    """Which remedy points keep >= ``keep_gain`` of the no-remedy gain with <= ``max_regression`` of its regression."""
    ref = no_remedy_point(points)
    meeting = [
        p.name for p in points
        if p is not ref and ref.general_change > 0 and p.domain_gain >= keep_gain * ref.domain_gain
        and p.general_change <= max_regression * ref.general_change
    ]
    return RemedyGoal(keep_gain, max_regression, ref.name, ref.forgets_clearly, meeting)


@dataclass
class Recommendation:
    """The point to ship under a general-regression threshold declared before the experiment."""

    max_general_regression: float  # relative change of general bits per byte, e.g. 0.01 = 1% dearer
    chosen: str | None  # name of the chosen point, None when no point stays under the threshold
    sentence: str


def recommend(points: list[FrontierPoint], max_general_regression: float) -> Recommendation:
    """The largest domain gain among points whose general change stays at or under the threshold.

    The threshold is judged on the point estimate and the interval is quoted
    beside it; when nothing stays under it, the sentence says so and names the
    point that regresses least.
    """
    under = [p for p in points if p.general_change <= max_general_regression and p.domain_gain > 0]
    limit = f"{max_general_regression:+.2%}"
    if not under:
        least = min(points, key=lambda p: p.general_change)
        return Recommendation(max_general_regression, None, (
            f"No point gains on the domain with a general change at or under the declared {limit}: the least "
            f"damaging is '{least.name}' ({least.general_change:+.2%} general, {least.domain_gain:+.2%} domain). "
            "Raise the replay share, lower alpha, or train less."))
    best = max(under, key=lambda p: p.domain_gain)
    low, high = best.general_ci
    return Recommendation(max_general_regression, best.name, (
        f"Recommended under the declared threshold ({limit} general bits per byte): '{best.name}', domain gain "
        f"{best.domain_gain:+.2%}, general change {best.general_change:+.2%} (95% interval {low:+.2%} to {high:+.2%})"
        + (" — its interval reaches past the threshold, so confirm it on more held-out text." if high >
           max_general_regression else ".")))


def frontier_markdown(points: list[FrontierPoint]) -> str:
    """One row per point: replay share, alpha, the two changes with intervals, Pareto mark, training time."""
    rows = [[
        p.name, f"{p.replay_share:.0%}", f"{p.alpha:g}",
        f"{p.domain_gain:+.2%} [{p.domain_ci[0]:+.2%}, {p.domain_ci[1]:+.2%}]",
        f"{p.general_change:+.2%} [{p.general_ci[0]:+.2%}, {p.general_ci[1]:+.2%}]",
        "yes" if p.pareto else "", f"{p.train_seconds:.0f} s" if p.train_seconds else "eval only",
    ] for p in points]
    header = ["point", "replay", "alpha", "domain gain [95% CI]", "general change [95% CI]", "Pareto", "train time"]
    return markdown_table(header, rows, right=range(1, 7))


def frontier_figure(points: list[FrontierPoint], max_general_regression: float | None = None, title: str = ""):
    """Domain gain (x, %) against general change (y, %, up = forgetting); Pareto points ringed.

    Replay runs are joined in order of share; interpolated points are joined from
    the base (origin) to the run they come from; vertical bars are the general
    change's 95% intervals; the dashed line is the declared threshold.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.8), dpi=100)
    ax = fig.subplots()
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    if max_general_regression is not None:
        ax.axhline(100 * max_general_regression, color="C3", ls="--", lw=1,
                   label=f"declared threshold {max_general_regression:+.1%}")
    runs = sorted((p for p in points if p.alpha == 1), key=lambda p: p.replay_share)
    series = [("replay share (trained runs)", runs, "C0", "o")]
    for share in sorted({p.replay_share for p in points if p.alpha != 1}):
        chain = sorted((p for p in points if p.replay_share == share), key=lambda p: p.alpha)
        series.append((f"alpha toward the base (replay {share:.0%} run)", chain, "C1", "s"))
    for label, chain, color, marker in series:
        xs, ys = [100 * p.domain_gain for p in chain], [100 * p.general_change for p in chain]
        if marker == "s":
            xs, ys = [0.0, *xs], [0.0, *ys]  # alpha 0 is the base model itself
        ax.plot(xs, ys, marker=marker, color=color, lw=1.2, label=label)
        for p in chain:
            low, high = (100 * v for v in p.general_ci)
            ax.errorbar([100 * p.domain_gain], [100 * p.general_change], color=color, lw=0.8, capsize=2,
                        yerr=[[100 * p.general_change - low], [high - 100 * p.general_change]])
            tag = f"{p.replay_share:.0%}" if p.alpha == 1 else f"α {p.alpha:g}"
            ax.annotate(tag, (100 * p.domain_gain, 100 * p.general_change), textcoords="offset points",
                        xytext=(5, 4), fontsize=8, color=color)
    front = [p for p in points if p.pareto]
    ax.plot([100 * p.domain_gain for p in front], [100 * p.general_change for p in front], "o", ms=13,
            mfc="none", mec="k", mew=1.4, label="Pareto point (nothing beats it on both)")
    ax.plot([0], [0], "ks", label="base model")
    ax.set_xlabel("held-out domain gain: % fewer bits per byte (right is better)")
    ax.set_ylabel("held-out general change: % bits per byte (up = forgetting)")
    ax.set_title(title or "Forgetting frontier: what each remedy keeps and what it costs")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def write_frontier(out_dir: str | Path, points: list[FrontierPoint], max_general_regression: float,
                   title: str = "", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Mark the Pareto front, then write ``frontier.json``, ``frontier.md`` and ``frontier.png``; return the payload."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pareto_front(points)
    goal, choice = remedy_goal(points), recommend(points, max_general_regression)
    ref = no_remedy_point(points)
    forgetting = (f"Without remedy ('{ref.name}') general bits per byte changed {ref.general_change:+.2%} "
                  f"(95% interval {ref.general_ci[0]:+.2%} to {ref.general_ci[1]:+.2%}): "
                  + ("forgetting beyond the interval." if ref.forgets_clearly else "not clearly forgetting."))
    verdict = [forgetting, goal.sentence(), choice.sentence]
    payload = {
        "points": [p.to_dict() for p in points],
        "max_general_regression": max_general_regression,
        "remedy_goal": {**asdict(goal), "met": goal.met},
        "recommendation": asdict(choice),
        "verdict": verdict,
        **(extra or {}),
    }
    (out / "frontier.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
    md = [f"# {title or 'Forgetting frontier'}", "", frontier_markdown(points), "", *verdict, ""]
    (out / "frontier.md").write_text("\n".join(md), encoding="utf-8")
    frontier_figure(points, max_general_regression, title).savefig(out / "frontier.png")
    return payload
