"""One model's evaluation as a document: ``results.json`` and ``report.md``.

A results document gathers the task scores (each task's ``TaskResult.to_dict()``,
per-item records included, so two runs can later be compared item by item),
held-out scores (``measure()["heldout"]``), generations and provenance::

    {"meta": {"model", "adapter", "cptnb_version", "created", "limit", ...},
     "tasks": {"exams_vi": {"kind", "role", "num_fewshot", "n", "metrics", "stderr", "subjects", "items"}, ...},
     "heldout": {"domain": {"loss", "perplexity", "bits_per_byte", "tokens", "bytes", "docs", "items"?}, ...},
     "generations": [{"prompt", "output"}, ...]}

A task with subjects (exams_vi) is summarised the way lm-eval summarises a group:
the size-weighted mean of the subject scores, which is the score pooled over all
items, with the pooled-variance standard error (:func:`task_summary`).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cptnb.errors import DataError
from cptnb.tables import markdown_table

log = logging.getLogger(__name__)

LOWER_IS_BETTER = frozenset({"loss", "perplexity", "bits_per_byte", "word_perplexity", "byte_perplexity"})
ROLES = ("domain", "general")
HELDOUT_METRICS = ("loss", "perplexity", "bits_per_byte")  # lower is better for all three


def higher_is_better(metric: str) -> bool:
    """True for accuracies, False for losses and perplexities."""
    return metric not in LOWER_IS_BETTER


@dataclass(frozen=True)
class ResultsFiles:
    """Where :func:`write_results` put a results document."""

    json: Path  # results.json, the machine-readable document
    markdown: Path  # report.md, the same numbers as tables


# --------------------------------------------------------------------------- shape checks


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_scores(problems: list[str], where: str, scores: Any, field: str, optional_values: bool) -> None:
    if not isinstance(scores, dict):
        problems.append(f"{where}.{field} must be a mapping of metric name -> number, got {type(scores).__name__}")
        return
    for metric, value in scores.items():
        if not (_is_number(value) or (optional_values and value is None)):
            problems.append(f"{where}.{field}.{metric} must be a number, got {value!r}")


def _check_task(problems: list[str], name: str, task: Any) -> None:
    where = f"tasks.{name}"
    if not isinstance(task, dict):
        problems.append(f"{where} must be a mapping (a TaskResult.to_dict()), got {type(task).__name__}")
        return
    for key in ("kind", "role", "n", "metrics"):
        if key not in task:
            problems.append(f"{where} has no {key!r}")
    if "role" in task and task["role"] not in ROLES:
        problems.append(f"{where}.role must be one of {', '.join(ROLES)}, got {task['role']!r}")
    if "n" in task and not (isinstance(task["n"], int) and task["n"] >= 0):
        problems.append(f"{where}.n must be a count of items, got {task['n']!r}")
    if "metrics" in task:
        _check_scores(problems, where, task["metrics"], "metrics", optional_values=False)
    _check_scores(problems, where, task.get("stderr", {}), "stderr", optional_values=True)
    subjects = task.get("subjects", {})
    if not isinstance(subjects, dict):
        problems.append(f"{where}.subjects must be a mapping of subject -> scores")
        subjects = {}
    for subject, scores in subjects.items():
        sub = f"{where}.subjects.{subject}"
        if not isinstance(scores, dict) or not isinstance(scores.get("n"), int):
            problems.append(f"{sub} must be a mapping with an integer 'n', 'metrics' and 'stderr'")
            continue
        _check_scores(problems, sub, scores.get("metrics"), "metrics", optional_values=False)
        _check_scores(problems, sub, scores.get("stderr", {}), "stderr", optional_values=True)
    items = task.get("items", [])
    if not isinstance(items, list) or not all(isinstance(i, dict) and "id" in i for i in items):
        problems.append(f"{where}.items must be a list of records, each with an 'id'")


def _check_heldout(problems: list[str], heldout: Any) -> None:
    if not isinstance(heldout, dict):
        problems.append(f"heldout must be a mapping of set name -> scores, got {type(heldout).__name__}")
        return
    for name, scores in heldout.items():
        where = f"heldout.{name}"
        if not isinstance(scores, dict):
            problems.append(f"{where} must be a mapping of scores (HeldoutScore.to_dict())")
            continue
        for metric in HELDOUT_METRICS:
            if not _is_number(scores.get(metric)):
                problems.append(f"{where}.{metric} must be a number, got {scores.get(metric)!r}")
        items = scores.get("items", [])
        fields = ("id", "nll_nats", "tokens", "bytes")
        if not isinstance(items, list) or not all(isinstance(i, dict) and all(f in i for f in fields) for i in items):
            problems.append(f"{where}.items must be a list of records with {', '.join(fields)}")


def results_problems(doc: Any, require_meta: bool = True) -> list[str]:
    """Every way ``doc`` departs from the results shape (empty when it is fine)."""
    if not isinstance(doc, dict):
        return [f"the document must be a JSON object with 'meta' and 'tasks', got {type(doc).__name__}"]
    problems: list[str] = []
    if require_meta and not isinstance(doc.get("meta"), dict):
        problems.append("'meta' is missing or not an object (model, adapter, cptnb_version, created, limit)")
    tasks = doc.get("tasks", {})
    if not isinstance(tasks, dict):
        problems.append(f"'tasks' must be a mapping of task name -> task result, got {type(tasks).__name__}")
    else:
        for name, task in tasks.items():
            _check_task(problems, name, task)
    if doc.get("heldout") is not None:
        _check_heldout(problems, doc["heldout"])
    gens = doc.get("generations", [])
    if not isinstance(gens, list) or not all(isinstance(g, dict) and {"prompt", "output"} <= set(g) for g in gens):
        problems.append("'generations' must be a list of {prompt, output} records")
    if not tasks and not doc.get("heldout"):
        problems.append("there are neither tasks nor held-out scores: nothing was evaluated")
    return problems


def _raise_if(problems: list[str], where: str, fix: str) -> None:
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise DataError(f"{where} is not a valid results document ({len(problems)} problem(s)):\n{lines}\n{fix}")


# --------------------------------------------------------------------------- build, write, load


def build_results(
    task_results: dict[str, dict],
    heldout: dict[str, dict] | None = None,
    meta: dict[str, Any] | None = None,
    generations: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Assemble a results document and check its shape.

    ``task_results`` maps task name to ``TaskResult.to_dict()``; ``heldout`` is
    ``measure(...)["heldout"]``; ``meta`` names at least the model (and the
    adapter, if any). ``cptnb_version`` and ``created`` are filled in.

    Example::

        doc = build_results({"exams_vi": r.to_dict()}, before["heldout"], {"model": "smollm2-135m"})
    """
    from cptnb import __version__

    full_meta = {"model": None, "adapter": None, "cptnb_version": __version__, "limit": None}
    full_meta["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    full_meta.update(meta or {})
    doc = {"meta": full_meta, "tasks": dict(task_results), "heldout": dict(heldout or {}), "generations": list(generations or [])}
    _raise_if(results_problems(doc), "the results being built", "Pass each task's TaskResult.to_dict() and measure()['heldout'].")
    for name, task in doc["tasks"].items():
        _warn_if_group_disagrees(name, task)
    return doc


def write_results(out_dir: str | Path, results: dict[str, Any]) -> ResultsFiles:
    """Write ``results.json`` and ``report.md`` into ``out_dir``."""
    _raise_if(results_problems(results), "the results to write", "Build them with build_results().")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = ResultsFiles(json=out / "results.json", markdown=out / "report.md")
    files.json.write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")
    files.markdown.write_text(results_markdown(results), encoding="utf-8")
    log.info("wrote %s and %s", files.json, files.markdown)
    return files


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a ``results.json`` (or the directory holding one) and check its shape."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise DataError(f"{p}: no results file here. Run the evaluation first (it writes results.json) or pass its path.")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(f"{p}: not UTF-8 text ({err}); is this really a results.json?") from err
    except json.JSONDecodeError as err:
        raise DataError(
            f"{p}, line {err.lineno}, column {err.colno}: not valid JSON ({err.msg}). "
            "The file may be truncated; evaluate again to rewrite it."
        ) from err
    _raise_if(results_problems(doc), str(p), "Rewrite it with write_results() or evaluate again.")
    return doc


# --------------------------------------------------------------------------- groups (exams_vi)


def task_summary(task: dict[str, Any]) -> tuple[dict[str, float], dict[str, float | None], int]:
    """(metrics, stderr, n) of a task; for a task with subjects, lm-eval's group summary.

    lm-eval aggregates a group by default as the size-weighted mean of its
    subtasks (so the value equals the score pooled over all items) and the
    pooled-variance standard error, which is what this returns.
    """
    subjects = task.get("subjects") or {}
    if not subjects:
        return dict(task["metrics"]), dict(task.get("stderr", {})), task["n"]
    sizes = {s: v["n"] for s, v in subjects.items() if v["n"] > 0}
    total = sum(sizes.values())
    shared = set.intersection(*(set(subjects[s]["metrics"]) for s in sizes)) if sizes else set()
    metrics, stderr = {}, {}
    order = [m for m in task["metrics"] if m in shared] + sorted(shared - set(task["metrics"]))
    for metric in order:
        metrics[metric] = sum(subjects[s]["metrics"][metric] * n for s, n in sizes.items()) / total
        errs = [subjects[s].get("stderr", {}).get(metric) for s in sizes]
        if total > len(sizes) and all(e is not None and math.isfinite(e) for e in errs):
            # Pooled variance: each subject's sample variance (stderr^2 * n) weighted by its degrees of freedom.
            pooled = sum((n - 1) * e * e * n for n, e in zip(sizes.values(), errs)) / (total - len(sizes))
            stderr[metric] = math.sqrt(pooled / total)
        else:
            stderr[metric] = None
    return metrics, stderr, total


def unweighted_subject_mean(task: dict[str, Any], metric: str) -> float | None:
    """Plain mean of the subject scores (each subject counts once, whatever its size)."""
    values = [v["metrics"][metric] for v in (task.get("subjects") or {}).values() if metric in v["metrics"]]
    return sum(values) / len(values) if values else None


def _warn_if_group_disagrees(name: str, task: dict[str, Any]) -> None:
    if not task.get("subjects"):
        return
    metrics, _, _ = task_summary(task)
    for metric, value in metrics.items():
        reported = task["metrics"].get(metric)
        if reported is not None and abs(reported - value) > 1e-6:
            log.warning(
                "%s: %s is %.6f but the size-weighted mean of its subjects is %.6f; the report uses the latter",
                name, metric, reported, value,
            )


# --------------------------------------------------------------------------- markdown


def fmt(value: float | None, metric: str = "") -> str:
    """A score for a table: 4 decimals, 2 for perplexities, '—' when absent."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.2f}" if "perplexity" in metric else f"{value:.4f}"


def _ordered_tasks(tasks: dict[str, Any]) -> list[str]:
    """Domain tasks first, then general ones, each alphabetically."""
    return sorted(tasks, key=lambda t: (ROLES.index(tasks[t]["role"]) if tasks[t]["role"] in ROLES else 9, t))


def tasks_markdown(tasks: dict[str, Any]) -> str:
    """Per task and per subject: metric, value, ± standard error, n."""
    rows: list[list[Any]] = []
    notes = []
    for name in _ordered_tasks(tasks):
        task = tasks[name]
        metrics, stderr, n = task_summary(task)
        subjects = task.get("subjects") or {}
        label = f"{name} (mean)" if subjects else name
        for metric, value in metrics.items():
            shots = task.get("num_fewshot", "")
            rows.append([label, task["role"], shots, metric, fmt(value, metric), fmt(stderr.get(metric)), n])
        for subject in sorted(subjects):
            s = subjects[subject]
            for metric, value in s["metrics"].items():
                err = s.get("stderr", {}).get(metric)
                rows.append([f"{name}_{subject}", "", "", metric, fmt(value, metric), fmt(err), s["n"]])
        if subjects:
            first = next(iter(metrics), None)
            plain = unweighted_subject_mean(task, first) if first else None
            notes.append(
                f"{name} (mean) is the size-weighted mean of its {len(subjects)} subjects (lm-eval's group default), "
                f"i.e. the score pooled over all {n} items; the unweighted mean of the subjects' {first} is {fmt(plain)}."
            )
    table = markdown_table(["task", "role", "shots", "metric", "value", "± stderr", "n"], rows, right=(2, 4, 5, 6))
    return "\n".join([table] + ([""] + notes if notes else []))


def heldout_markdown(heldout: dict[str, Any]) -> str:
    """Held-out sets as a table: loss, perplexity, bits per byte, tokens, bytes."""
    rows = [
        [name, s["loss"], f"{s['perplexity']:.2f}", s["bits_per_byte"], s["tokens"], s["bytes"]]
        for name, s in heldout.items()
    ]
    return markdown_table(["held-out set", "loss", "perplexity", "bits per byte", "tokens", "bytes"], rows, right=(2,))


def generations_markdown(generations: list[dict[str, str]]) -> str:
    return "\n".join(f"\n**{g['prompt']}** → {g['output']}" for g in generations)


def results_markdown(results: dict[str, Any]) -> str:
    """``report.md``: provenance, task table, held-out table and generations."""
    meta = results.get("meta", {})
    model = meta.get("model") or "model"
    head = [f"# Evaluation: {model}" + (f" + {meta['adapter']}" if meta.get("adapter") else ""), ""]
    facts = [f"{k}: {meta[k]}" for k in ("created", "cptnb_version", "limit") if meta.get(k) is not None]
    if facts:
        head += [" · ".join(facts), ""]
    parts = head
    if results.get("tasks"):
        parts += ["## Tasks", "", tasks_markdown(results["tasks"]), ""]
    if results.get("heldout"):
        parts += ["## Held-out text", "", heldout_markdown(results["heldout"]), ""]
    if results.get("generations"):
        parts += ["## Generations (greedy)", generations_markdown(results["generations"]), ""]
    return "\n".join(parts)
