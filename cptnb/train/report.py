"""The run's report: what training saw at its eval steps, written beside ``metrics.jsonl``.

:func:`write_run_report` turns a run's metrics events (and the watch summary
:func:`cptnb.train.train` returns) into ``train_report.md`` and
``train_report.json``: one row per eval step (held-out losses, task scores,
the change against the base, the retention verdict), the generations at each
eval step, the declared threshold and what happened at it, and how much time
the task scores and generations cost next to the training itself.
``cptnb train`` writes it at the end of every run; nothing here scores a model.

Example::

    write_run_report("runs/cpt", read_metrics("runs/cpt/metrics.jsonl"), result.watch)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cptnb.tables import markdown_table

OVERHEAD_GOAL = 0.15  # task scores + generations at default settings: at most this share of the training time
_EVAL_KEYS = ("heldout_", "task_", "domain_task_acc", "general_task_acc", "generations", "retention")
_WATCH_KEYS = ("generation_seconds", "general_bpb_rise", "general_task_acc_change")


def evaluation_rows(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events of each eval step merged into one dict per step (held-out loss and watch events), by step."""
    by_step: dict[int, dict[str, Any]] = {}
    for event in events:
        if any(k.startswith(_EVAL_KEYS) for k in event):
            step = int(event.get("step", 0))
            by_step.setdefault(step, {"step": step}).update(
                {k: v for k, v in event.items() if k.startswith(_EVAL_KEYS) or k in _WATCH_KEYS})
    return [by_step[s] for s in sorted(by_step)]


def _task_names(rows: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for row in rows:
        for key in row:
            if key.startswith("task_") and key.endswith("_acc") and key != "task_eval_seconds":
                name = key[len("task_"):-len("_acc")]
                if name not in names:
                    names.append(name)
    return names


def _num(value: Any, pattern: str = "{:.4f}") -> str:
    return pattern.format(value) if isinstance(value, (int, float)) else ""


def _evaluations_table(rows: list[dict[str, Any]]) -> str:
    tasks = _task_names(rows)
    header = ["step", "held-out domain loss", "held-out general loss", "general bpb change",
              "domain tasks acc", "general tasks acc", *[f"{t} acc" for t in tasks], "retention"]
    table = [
        [row["step"], _num(row.get("heldout_domain_loss")), _num(row.get("heldout_general_loss")),
         _num(row.get("general_bpb_rise"), "{:+.2%}"), _num(row.get("domain_task_acc"), "{:.3f}"),
         _num(row.get("general_task_acc"), "{:.3f}"), *[_num(row.get(f"task_{t}_acc"), "{:.3f}") for t in tasks],
         row.get("retention", "")]
        for row in rows
    ]
    return markdown_table(header, table, right=tuple(range(1, len(header) - 1)))


def _generations(rows: list[dict[str, Any]]) -> list[str]:
    prompts: dict[str, list[tuple[int, str]]] = {}
    for row in rows:
        for g in row.get("generations") or []:
            prompts.setdefault(g["prompt"], []).append((row["step"], g["output"]))
    md = []
    for prompt, outputs in prompts.items():
        md += [f"**Prompt:** {prompt}", ""] + [f"- step {step}: {text}" for step, text in outputs] + [""]
    return md


def _retention(summary: dict[str, Any]) -> list[str]:
    if not summary.get("threshold"):
        return ["No retention threshold was declared (train.max_general_bpb_rise, train.max_general_task_drop)."]
    lines = [f"Declared before training: {summary['threshold']} (train.on_regression: {summary['on_regression']})."]
    if summary.get("first_crossed_step") is None:
        lines.append("Within the threshold at every evaluation.")
        return lines
    what = "; ".join(summary.get("first_crossed") or [])
    lines.append(f"Crossed at step {summary['first_crossed_step']}: {what}.")
    if summary.get("stopped_at_step") is not None:
        final = summary.get("final_model_step")
        rolled = (f"the final model is checkpoint-{final}, the best within the threshold"
                  if final is not None and final != summary["stopped_at_step"]
                  else "no checkpoint within the threshold was saved, so the final model is beyond it")
        lines.append(f"Training stopped at step {summary['stopped_at_step']}; {rolled}.")
    else:
        lines.append("Training went on (warn); an earlier checkpoint, more replay or a lower learning rate would "
                     "keep it within.")
    return lines


def overhead_sentence(summary: dict[str, Any]) -> str:
    """Task scores and generations against the training time, in one sentence."""
    share = summary["overhead_share"]
    return (
        f"Task scores {summary['task_eval_seconds']:.1f} s and generations {summary['generation_seconds']:.1f} s over "
        f"{summary['evaluations']} evaluations, against {summary['training_seconds']:.1f} s of training without "
        f"evaluation: {share:.1%} overhead ({'within' if share <= OVERHEAD_GOAL else 'over'} the "
        f"{OVERHEAD_GOAL:.0%} goal). Held-out loss evaluation: {summary['heldout_eval_seconds']:.1f} s."
    )


def run_report_markdown(events: list[dict[str, Any]], summary: dict[str, Any] | None = None, title: str = "") -> str:
    """The report as markdown (see the module docstring)."""
    rows = evaluation_rows(events)
    steps = [int(e["step"]) for e in events if "train_loss" in e]
    losses = [e["train_loss"] for e in events if "train_loss" in e]
    md = [f"# {title or 'Training run'}", ""]
    if steps:
        md += [f"{max(steps)} steps; train loss {losses[0]:.4f} at step {steps[0]}, {losses[-1]:.4f} at step "
               f"{steps[-1]}.", ""]
    if summary is not None:
        md += ["## Retention", "", *_retention(summary), ""]
    if rows:
        md += ["## Evaluations during training", "",
               "Task accuracy on the first items of each task (train.task_eval_limit), scored as `cptnb evaluate` "
               "scores them; general bpb change: held-out general loss against step 0 (the base), the same share "
               "as its bits per byte on these blocks.", "", _evaluations_table(rows), ""]
    gens = _generations(rows)
    if gens:
        md += ["## Generations during training (greedy)", "", *gens]
    if summary is not None and summary.get("evaluations"):
        md += ["## Cost", "", overhead_sentence(summary), ""]
    return "\n".join(md).rstrip() + "\n"


def write_run_report(out_dir: str | Path, events: list[dict[str, Any]], summary: dict[str, Any] | None = None,
                     title: str = "") -> Path:
    """Write ``train_report.md`` and ``train_report.json`` into ``out_dir``; returns the markdown's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"title": title, "watch": summary, "evaluations": evaluation_rows(events)}
    (out / "train_report.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")
    path = out / "train_report.md"
    path.write_text(run_report_markdown(events, summary, title), encoding="utf-8")
    return path
