"""Base against adapted, item by item: deltas with paired-bootstrap intervals.

Both results documents hold per-item records (same ids: same task files, same
limit). Each delta gets a percentile interval from resampling the *items*: one
resample of indices is applied to base and adapted alike, so the interval
reflects how much the difference depends on which items happened to be in the
test set, not the (much larger) spread of either score alone. Resampling is
vectorised: ``n_boot`` x ``n`` index matrices in chunks.

:func:`retention` sums the rows up in one sentence: domain gain against the
change in general ability. :func:`cptnb.evaluate.report.write_comparison`
(also importable from here) writes the files.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cptnb.errors import DataError
from cptnb.evaluate.results import HELDOUT_METRICS, ROLES, higher_is_better, results_problems, task_summary
from cptnb.retention import RetentionThreshold

log = logging.getLogger(__name__)

_MAX_CELLS = 4_000_000  # resampled values held at once (~32 MB of float64), whatever n_boot x n is
_LN2 = math.log(2)

# statistic(fields, idx) -> one value per resample; fields are per-item arrays, idx is (resamples, n)
Statistic = Callable[[dict[str, np.ndarray], np.ndarray], np.ndarray]


@dataclass
class Row:
    """One metric of one task, subject or held-out set: base, adapted and the delta's interval."""

    set: str  # task name ("exams_vi") or held-out set name ("domain")
    kind: str  # "task", "subject" (of a task) or "heldout"
    role: str  # "domain" or "general": which ability the number speaks for
    metric: str  # "acc", "acc_norm", "perplexity", "bits_per_byte", ...
    base: float
    adapted: float
    delta: float  # adapted - base
    ci_low: float | None  # lower end of the paired-bootstrap interval of delta; None without per-item values
    ci_high: float | None
    confidence: float  # e.g. 0.95
    n: int | None  # items (documents for held-out sets) behind the numbers
    base_stderr: float | None = None
    adapted_stderr: float | None = None
    subject: str | None = None
    samples: np.ndarray | None = field(default=None, repr=False, compare=False)  # bootstrap deltas, for aggregates

    @property
    def label(self) -> str:
        """How the row is named in tables: ``exams_vi_dia`` (ViLLM-Eval style), ``held-out domain``."""
        if self.kind == "subject":
            return f"{self.set}_{self.subject}"
        return f"held-out {self.set}" if self.kind == "heldout" else self.set

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric)

    @property
    def relative_change(self) -> float:
        return self.delta / self.base if self.base else float("nan")

    @property
    def verdict(self) -> str:
        """"better" / "worse" when the interval excludes zero, "unclear" when it does not, "n/a" without one."""
        if self.ci_low is None or self.ci_high is None:
            return "n/a"
        if self.ci_low <= 0 <= self.ci_high:
            return "unclear"
        return "better" if (self.ci_low > 0) == self.higher_is_better else "worse"

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "samples"}
        return {**d, "label": self.label, "relative_change": self.relative_change, "verdict": self.verdict}


# --------------------------------------------------------------------------- bootstrap


def paired_bootstrap(
    base: dict[str, np.ndarray],
    adapted: dict[str, np.ndarray],
    statistics: dict[str, Statistic],
    n_boot: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """``n_boot`` resampled values of ``stat(adapted) - stat(base)`` for each statistic.

    ``base`` and ``adapted`` hold per-item arrays aligned by item (same length n);
    each resample draws n item indices with replacement and applies them to both.
    """
    n = len(next(iter(base.values())))
    out = {name: np.empty(n_boot) for name in statistics}
    per_chunk = max(1, _MAX_CELLS // max(n, 1))
    dtype = np.int16 if n < 2**15 else np.int32  # narrow indices: drawing and gathering run several times faster
    for start in range(0, n_boot, per_chunk):
        idx = rng.integers(0, n, size=(min(per_chunk, n_boot - start), n), dtype=dtype)
        for name, stat in statistics.items():
            out[name][start : start + len(idx)] = stat(adapted, idx) - stat(base, idx)
    return out


def percentile_interval(samples: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` share of the bootstrap distribution."""
    tail = (1 - confidence) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_mean_delta(
    base: np.ndarray, adapted: np.ndarray, n_boot: int = 10_000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(delta, low, high) for the mean of paired per-item scores, e.g. 0/1 correctness.

    Example::

        bootstrap_mean_delta(np.array([0, 1, 0]), np.array([1, 1, 0]))  # (0.333, 0.0, 1.0)
    """
    b, a = np.asarray(base, dtype=float), np.asarray(adapted, dtype=float)
    if b.shape != a.shape or b.ndim != 1 or len(b) == 0:
        raise ValueError(f"need two equally long 1-d arrays of per-item scores, got shapes {b.shape} and {a.shape}")
    samples = paired_bootstrap({"x": b}, {"x": a}, {"mean": _mean_of("x")}, n_boot, np.random.default_rng(seed))
    return float(a.mean() - b.mean()), *percentile_interval(samples["mean"], confidence)


def _mean_of(key: str) -> Statistic:
    return lambda f, idx: f[key][idx].mean(axis=1)


def _perplexity_from_loglikelihood(f: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
    # lm-eval's lambada perplexity: exp of minus the mean per-item log-likelihood of the target.
    return np.exp(-f["loglikelihood"][idx].mean(axis=1))


def _heldout_statistic(metric: str) -> Statistic:
    def stat(f: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
        nll = f["nll_nats"][idx].sum(axis=1)  # ratios of sums, as the aggregate scores are defined
        if metric == "bits_per_byte":
            return nll / _LN2 / f["bytes"][idx].sum(axis=1)
        loss = nll / f["tokens"][idx].sum(axis=1)
        return np.exp(loss) if metric == "perplexity" else loss

    return stat


def _statistic(metric: str, kind: str, fields: set[str]) -> Statistic | None:
    """How to recompute ``metric`` from per-item fields, or None when they do not allow it."""
    if kind == "heldout":
        return _heldout_statistic(metric) if {"nll_nats", "tokens", "bytes"} <= fields else None
    if metric == "perplexity":
        return _perplexity_from_loglikelihood if "loglikelihood" in fields else None
    return _mean_of(metric) if metric in fields else None


# --------------------------------------------------------------------------- pairing items


def _numeric_fields(items: list[dict[str, Any]]) -> set[str]:
    keys = set.intersection(*(set(i) for i in items)) if items else set()
    return {k for k in keys if all(isinstance(i[k], (int, float)) for i in items)}  # bools count: True is 1


def _paired_arrays(
    where: str, base_items: list[dict], adapted_items: list[dict], names: tuple[str, str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-item arrays of both runs, aligned by ``id``; refuses when the item sets differ."""
    by_id = []
    for items, name in zip((base_items, adapted_items), names):
        ids = [str(i["id"]) for i in items]
        if len(set(ids)) != len(ids):
            dup = next(x for x in ids if ids.count(x) > 1)
            raise DataError(f"{where}: item id {dup!r} appears more than once in {name}; ids must be unique per task.")
        by_id.append(dict(zip(ids, items)))
    only_base = sorted(set(by_id[0]) - set(by_id[1]))
    only_adapted = sorted(set(by_id[1]) - set(by_id[0]))
    if only_base or only_adapted:
        missing, has, lacks = (only_base[0], names[0], names[1]) if only_base else (only_adapted[0], names[1], names[0])
        raise DataError(
            f"{where}: item ids differ between {names[0]} and {names[1]} ({len(only_base)} only in {names[0]}, "
            f"{len(only_adapted)} only in {names[1]}); e.g. id {missing!r} is in {has} but not in {lacks}. "
            "Evaluate both models on the same task files with the same limit."
        )
    order = sorted(by_id[0])
    fields = _numeric_fields(base_items) & _numeric_fields(adapted_items)
    arrays = tuple({k: np.array([d[i][k] for i in order], dtype=float) for k in fields} for d in by_id)
    return arrays[0], arrays[1]


# --------------------------------------------------------------------------- rows


@dataclass
class _Unit:
    """One thing compared: a task, a subject or a held-out set, with its numbers on both sides."""

    set: str
    kind: str
    role: str
    subject: str | None
    metrics: tuple[dict[str, float], dict[str, float]]
    stderr: tuple[dict[str, Any], dict[str, Any]]
    n: int | None
    items: tuple[list[dict], list[dict]]

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.set}:{self.subject or ''}"


def _rows_for(unit: _Unit, names, n_boot: int, seed: int, confidence: float) -> list[Row]:
    base_metrics, adapted_metrics = unit.metrics
    metrics = [m for m in base_metrics if m in adapted_metrics]
    samples: dict[str, np.ndarray] = {}
    n = unit.n
    if unit.items[0] and unit.items[1]:
        where = f"{unit.set}" + (f" (subject {unit.subject})" if unit.subject else "")
        fb, fa = _paired_arrays(where, *unit.items, names)
        stats = {m: s for m in metrics if (s := _statistic(m, unit.kind, set(fb))) is not None}
        if stats:
            # One generator per unit, seeded by its name: adding a task does not move the others' intervals.
            rng = np.random.default_rng([seed, zlib.crc32(unit.key.encode())])
            samples = paired_bootstrap(fb, fa, stats, n_boot, rng)
            n = len(next(iter(fb.values())))
            _warn_if_items_disagree(where, stats, (fb, fa), unit.metrics, names)
    rows = []
    for m in metrics:
        ci = percentile_interval(samples[m], confidence) if m in samples else (None, None)
        rows.append(
            Row(
                set=unit.set, kind=unit.kind, role=unit.role, metric=m, subject=unit.subject,
                base=base_metrics[m], adapted=adapted_metrics[m], delta=adapted_metrics[m] - base_metrics[m],
                ci_low=ci[0], ci_high=ci[1], confidence=confidence, n=n,
                base_stderr=unit.stderr[0].get(m), adapted_stderr=unit.stderr[1].get(m), samples=samples.get(m),
            )
        )
    return rows


def _warn_if_items_disagree(where, stats, fields, metrics, names) -> None:
    everything = np.arange(len(next(iter(fields[0].values()))))[None, :]
    for m, stat in stats.items():
        for f, reported, name in zip(fields, (metrics[0][m], metrics[1][m]), names):
            recomputed = float(stat(f, everything)[0])
            if not math.isclose(recomputed, reported, rel_tol=1e-6, abs_tol=1e-9):
                log.warning("%s %s in %s: items give %.6g but the file reports %.6g", where, m, name, recomputed, reported)


def _units(base: dict[str, Any], adapted: dict[str, Any]) -> list[_Unit]:
    units = []
    tb, ta = base.get("tasks") or {}, adapted.get("tasks") or {}
    for lone, side in ((set(tb) - set(ta), "base"), (set(ta) - set(tb), "adapted")):
        if lone:
            log.warning("tasks only in the %s results, left out of the comparison: %s", side, ", ".join(sorted(lone)))
    shared = sorted(set(tb) & set(ta), key=lambda t: (ROLES.index(tb[t]["role"]), t))
    for name in shared:
        b, a = tb[name], ta[name]
        (mb, sb, n), (ma, sa, _) = task_summary(b), task_summary(a)
        units.append(_Unit(name, "task", b["role"], None, (mb, ma), (sb, sa), n, (b.get("items") or [], a.get("items") or [])))
        subjects = sorted(set(b.get("subjects") or {}) & set(a.get("subjects") or {}))
        for s in subjects:
            bs, as_ = b["subjects"][s], a["subjects"][s]
            items = tuple([i for i in t.get("items") or [] if i.get("subject") == s] for t in (b, a))
            units.append(
                _Unit(name, "subject", b["role"], s, (bs["metrics"], as_["metrics"]),
                      (bs.get("stderr", {}), as_.get("stderr", {})), bs["n"], items)
            )
    hb, ha = base.get("heldout") or {}, adapted.get("heldout") or {}
    for name in [h for h in hb if h in ha]:
        items = (hb[name].get("items") or [], ha[name].get("items") or [])
        role = name if name in ROLES else ""
        metrics = tuple({m: h[name][m] for m in HELDOUT_METRICS} for h in (hb, ha))
        units.append(_Unit(name, "heldout", role, None, metrics, ({}, {}), hb[name].get("docs"), items))
    return units


def compare_results(
    base: dict[str, Any],
    adapted: dict[str, Any],
    n_boot: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
    names: tuple[str, str] = ("base", "adapted"),
) -> list[Row]:
    """Every task, subject and held-out metric present in both documents, with paired-bootstrap intervals.

    ``base``/``adapted`` are results documents (:func:`~cptnb.evaluate.results.build_results`)
    or ``measure()`` outputs (held-out scores only). ``names`` label them in errors.

    Example::

        rows = compare_results(load_results("runs/base"), load_results("runs/adapted"))
        [(r.label, r.metric, r.delta, r.ci_low, r.ci_high) for r in rows]
    """
    if n_boot < 1 or not 0 < confidence < 1 or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"need n_boot >= 1, 0 < confidence < 1 and a seed >= 0; got {n_boot}, {confidence}, {seed}")
    for doc, name in zip((base, adapted), names):
        problems = results_problems(doc, require_meta=False)
        if problems:
            raise DataError(f"{name} is not a results document:\n" + "\n".join(f"  - {p}" for p in problems))
    rows = [row for unit in _units(base, adapted) for row in _rows_for(unit, names, n_boot, seed, confidence)]
    if not rows:
        raise DataError(f"{names[0]} and {names[1]} share no task and no held-out set; nothing to compare.")
    return rows


# --------------------------------------------------------------------------- retention


@dataclass
class Retention:
    """Domain gain against the change in general ability, and whether that change is forgetting."""

    sentence: str  # the one-line summary
    forgetting: bool  # a general interval lies wholly on the worse side of zero
    domain_task_delta: float | None  # mean primary-metric delta over role=domain tasks
    domain_task_ci: tuple[float, float] | None
    general_task_delta: float | None  # same over role=general tasks
    general_task_ci: tuple[float, float] | None
    threshold: str | None = None  # the declared retention threshold in words (None: none declared)
    within_threshold: bool | None = None  # None without a threshold, or without the measures it names
    threshold_crossed: list[str] = field(default_factory=list)  # what lies beyond it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def primary_rows(rows: list[Row], role: str | None = None) -> list[Row]:
    """One row per task: its ``acc`` (ViLLM-Eval's headline metric), else its first metric."""
    tasks = [r for r in rows if r.kind == "task" and (role is None or r.role == role)]
    chosen: dict[str, Row] = {}
    for r in tasks:
        if r.set not in chosen or (r.metric == "acc" and chosen[r.set].metric != "acc"):
            chosen[r.set] = r
    return list(chosen.values())


def _task_mean(rows: list[Row], confidence: float) -> tuple[float | None, tuple[float, float] | None]:
    if not rows:
        return None, None
    delta = sum(r.delta for r in rows) / len(rows)
    if any(r.samples is None for r in rows):
        return delta, None
    # Tasks are resampled independently, so the mean of their resampled deltas is a resample of the mean delta.
    return delta, percentile_interval(np.mean([r.samples for r in rows], axis=0), confidence)


def _ci_text(ci: tuple[float | None, float | None] | None, confidence: float) -> str:
    if ci is None or ci[0] is None:
        return "no interval"
    return f"{confidence:.0%} CI {ci[0]:+.4f} to {ci[1]:+.4f}"


@dataclass
class _Side:
    """What the rows say about one ability (domain or general)."""

    phrases: list[str]  # pieces of the retention sentence
    task_delta: float | None
    task_ci: tuple[float, float] | None
    worse: list[str]  # measures whose interval lies wholly on the worse side of zero
    has_interval: bool


def _side(role: str, rows: list[Row], confidence: float) -> _Side:
    phrases, worse = [], []
    tasks = [r for r in primary_rows(rows, role) if r.higher_is_better]
    delta, ci = _task_mean(tasks, confidence)
    if tasks:
        metrics = "/".join(sorted({r.metric for r in tasks}))
        mean = "mean " if len(tasks) > 1 else ""
        phrases.append(f"{mean}{metrics} {delta:+.4f} ({_ci_text(ci, confidence)}) on {', '.join(r.set for r in tasks)}")
        if ci is not None and ci[1] < 0:
            worse.append(f"{role} task {metrics}")
    bpb = next((r for r in rows if r.kind == "heldout" and r.set == role and r.metric == "bits_per_byte"), None)
    if bpb:
        phrases.append(
            f"held-out {role} bits per byte {bpb.base:.4f} -> {bpb.adapted:.4f} "
            f"({bpb.relative_change:+.1%}; change {bpb.delta:+.4f}, {_ci_text((bpb.ci_low, bpb.ci_high), confidence)})"
        )
        if bpb.verdict == "worse":
            worse.append(f"held-out {role} bits per byte")
    has_interval = ci is not None or (bpb is not None and bpb.ci_low is not None)
    return _Side(phrases, delta, ci, worse, has_interval)


def retention(rows: list[Row], confidence: float = 0.95, threshold: RetentionThreshold | None = None) -> Retention:
    """Domain gain (role=domain tasks, held-out domain bits per byte) vs the general change, in one sentence.

    "forgetting" is said only when a general measure's interval lies wholly on
    the worse side of zero; a change whose interval straddles zero is retention.
    With a declared ``threshold`` (:class:`cptnb.retention.RetentionThreshold`)
    the verdict also says whether the general change stays within it: the
    relative change of held-out general bits per byte, and the mean change of
    the general tasks' primary metric (as ``train.max_general_task_drop`` reads it).
    """
    domain, general = _side("domain", rows, confidence), _side("general", rows, confidence)
    forgetting = bool(general.worse)
    text = f"Domain change: {'; '.join(domain.phrases) or 'no domain measure'}"
    if not general.phrases:
        text += "; no general measure was evaluated, so retention cannot be judged."
    else:
        text += f"; general change: {'; '.join(general.phrases)}; "
        if forgetting:
            text += f"forgetting ({' and '.join(general.worse)} worse, interval excluding zero)."
        elif general.has_interval:
            text += "general ability retained (no general interval lies wholly on the worse side of zero)."
        else:
            text += "without an interval retention cannot be judged."
    verdict = _threshold_verdict(rows, general, threshold)
    if verdict[0]:
        text += " " + verdict[0]
    return Retention(text, forgetting, domain.task_delta, domain.task_ci, general.task_delta, general.task_ci,
                     threshold.describe() if threshold is not None and threshold.declared else None, *verdict[1:])


def _threshold_verdict(rows: list[Row], general: _Side, threshold: RetentionThreshold | None):
    """(sentence, within, crossed) for a declared threshold; ("", None, []) without one."""
    if threshold is None or not threshold.declared:
        return "", None, []
    bpb = next((r for r in rows if r.kind == "heldout" and r.set == "general" and r.metric == "bits_per_byte"), None)
    bpb_rise = bpb.relative_change if bpb is not None else None
    measured = (threshold.max_general_bpb_rise > 0 and bpb_rise is not None) or \
        (threshold.max_general_task_drop > 0 and general.task_delta is not None)
    crossed = threshold.crossed(bpb_rise, general.task_delta)
    if crossed:
        return f"Beyond the declared retention threshold ({threshold.describe()}): {'; '.join(crossed)}.", False, crossed
    if not measured:
        return (f"The declared retention threshold ({threshold.describe()}) names no measure these results hold.",
                None, [])
    return f"Within the declared retention threshold ({threshold.describe()}).", True, []

