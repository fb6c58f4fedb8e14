"""One call for a whole evaluation: tasks, held-out perplexity and generations into a results document.

:func:`evaluate_model` is what ``cptnb evaluate`` and notebook 03 run, once for
the base model and once for the adapted one; ``cptnb compare`` (or
:func:`cptnb.evaluate.report.write_comparison`) then puts the two side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cptnb.config import EvalConfig
from cptnb.data.sources import read_documents
from cptnb.evaluate.heldout import evenly, measure
from cptnb.evaluate.results import build_results, write_results
from cptnb.evaluate.scoring import evaluate_tasks
from cptnb.evaluate.tasks import Task, load_tasks
from cptnb.guidance import evaluation_oom_advice, explain_out_of_memory


def tasks_from(cfg: EvalConfig, only: list[str] | None = None) -> list[Task]:
    """The tasks under ``cfg.tasks`` (few-shot overrides applied), optionally only those named in ``only``."""
    num_fewshot = None if cfg.num_fewshot < 0 else cfg.num_fewshot
    seed = None if cfg.fewshot_seed < 0 else cfg.fewshot_seed
    tasks = [t for path in cfg.tasks for t in load_tasks(path, num_fewshot=num_fewshot, fewshot_seed=seed)]
    if only:
        unknown = sorted(set(only) - {t.name for t in tasks})
        if unknown:
            from cptnb.errors import ConfigError

            raise ConfigError([f"unknown task {n!r}; found: {', '.join(t.name for t in tasks)}" for n in unknown], "tasks")
        tasks = [t for t in tasks if t.name in only]
    return tasks


def heldout_texts(domain: list[str], general: list[str], max_docs: int = 0) -> dict[str, list[str]]:
    """Held-out documents per set from files/folders (``max_docs`` > 0 keeps that many, spread evenly)."""
    sets = {"domain": domain, "general": general}
    return {name: evenly([d.text for d in read_documents(paths)], max_docs) for name, paths in sets.items() if paths}


def evaluate_model(
    model,
    tokenizer,
    cfg: EvalConfig,
    heldout: dict[str, list[str]] | None = None,
    meta: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    tasks: list[Task] | None = None,
) -> dict[str, Any]:
    """Score ``model`` on the tasks, held-out sets and prompts of ``cfg``; write results.json/report.md if ``out_dir``.

    Example::

        doc = evaluate_model(model, tok, EvalConfig(limit=20), heldout={"domain": vi, "general": en},
                             meta={"model": "smollm2-135m"}, out_dir="runs/eval/base")
    """
    tasks = tasks if tasks is not None else tasks_from(cfg)
    limit = cfg.limit or None
    with explain_out_of_memory("evaluation", lambda: evaluation_oom_advice(cfg)):
        scored = evaluate_tasks(model, tokenizer, tasks, batch_size=cfg.batch_size, limit=limit)
        measured = measure(model, tokenizer, heldout or {}, cfg) if (heldout or cfg.prompts) else {}
    doc = build_results(
        {name: result.to_dict() for name, result in scored.items()},
        measured.get("heldout"),
        {**(meta or {}), "limit": limit},
        generations=measured.get("generations"),
    )
    if out_dir is not None:
        write_results(out_dir, doc)
    return doc
