"""What a run measures at its eval steps besides held-out loss: task scores, generations, the retention threshold.

At every ``train.eval_steps`` (and at step 0, the base) :class:`TrainingWatch`
scores the first ``train.task_eval_limit`` items of evaluation tasks (by default
the role=general ones, ``train.task_eval_names: [all]`` for every one) with
the scoring of ``cptnb evaluate`` (:func:`cptnb.evaluate.scoring.score_prepared`:
few-shot draws, prompts and token ids prepared once, before training), so the
score at step N equals ``cptnb evaluate --eval.limit N`` on checkpoint N. It
generates greedily for ``eval.prompts`` with the same function as
``cptnb evaluate``, and checks the declared retention threshold
(:class:`cptnb.retention.RetentionThreshold`) against the base: it warns, or
(``train.on_regression: stop``) ends training, after which :func:`cptnb.train.train`
loads the best checkpoint within the threshold back. Everything goes into one
event per eval step (``metrics.jsonl``, the live panel, the trackers)::

    {"step": 12, "task_general_en_acc": 0.5, ..., "domain_task_acc": 0.41, "general_task_acc": 0.5,
     "general_bpb_rise": 0.004, "general_task_acc_change": 0.0, "retention": "ok", "retention_general_loss_limit": ...,
     "generations": [{"prompt": ..., "output": ...}], "task_eval_seconds": 3.1, "generation_seconds": 1.2}

Example::

    watch = TrainingWatch.from_recipe(recipe, loaded.tokenizer)
    result = train(loaded, blocks, recipe.train, eval_datasets=eval_sets, logger=logger, watch=watch)
    result.watch["overhead_share"]  # task scoring + generations, as a share of the training time
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from cptnb.evaluate.generate import generate
from cptnb.evaluate.scoring import PreparedTask, prepare_task, score_prepared
from cptnb.retention import RetentionThreshold

log = logging.getLogger(__name__)


def task_event_keys(name: str, metrics: dict[str, float]) -> dict[str, float]:
    """``task_<name>_<metric>`` for each metric of one task's scores (the keys of metrics.jsonl)."""
    return {f"task_{name}_{metric}": float(value) for metric, value in metrics.items()}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass
class TrainingWatch:
    """Tasks (prepared once), prompts and threshold a training run measures at its eval steps.

    ``baseline`` holds the base's ``heldout_general_loss`` and ``general_task_acc``
    (the first measurement of a fresh run; a resumed run takes them from its
    earlier metrics, :meth:`with_baseline_from`).
    """

    tasks: list[PreparedTask] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    max_new_tokens: int = 40
    batch_size: int = 8
    threshold: RetentionThreshold = field(default_factory=RetentionThreshold)
    on_regression: str = "warn"
    baseline: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_recipe(cls, recipe, tokenizer, earlier: Iterable[dict[str, Any]] = ()) -> "TrainingWatch | None":
        """The watch ``recipe.train`` asks for (None when it measures nothing), tasks prepared with ``tokenizer``.

        Tasks come from ``recipe.eval.tasks``: those named in ``train.task_eval_names``
        (``[all]``: every one; empty: the role=general ones), the first
        ``train.task_eval_limit`` items each; prompts from
        ``recipe.eval.prompts`` when ``train.eval_generations``. ``earlier`` are the
        metrics events of the run so far (a resumed run), which hold the base's values.
        """
        from cptnb.evaluate.suite import tasks_from
        from cptnb.paths import data_samples_dir

        cfg = recipe.train
        if cfg.eval_steps <= 0:
            return None
        eval_cfg = recipe.with_paths_under(data_samples_dir().parent).eval  # the kit's tasks from any folder
        tasks = []
        if cfg.task_eval_limit and eval_cfg.tasks:
            names = cfg.task_eval_names
            chosen = tasks_from(eval_cfg, only=None if names in ([], ["all"]) else names)
            if not names:  # the default: the general tasks, whose scores the retention threshold reads
                chosen = [t for t in chosen if t.role == "general"]
            tasks = [prepare_task(tokenizer, t, cfg.task_eval_limit) for t in chosen]
        prompts = list(eval_cfg.prompts) if cfg.eval_generations else []
        threshold = RetentionThreshold.from_config(cfg)
        if not (tasks or prompts or threshold.declared):
            return None
        watch = cls(tasks, prompts, eval_cfg.max_new_tokens, eval_cfg.batch_size, threshold, cfg.on_regression)
        return watch.with_baseline_from(earlier)

    def with_baseline_from(self, events: Iterable[dict[str, Any]]) -> "TrainingWatch":
        """Take the base's values from the earliest events holding them (a resumed run's metrics.jsonl)."""
        for event in sorted(events, key=lambda e: int(e.get("step", 0))):
            for key in ("heldout_general_loss", "general_task_acc"):
                if key not in self.baseline and isinstance(event.get(key), (int, float)):
                    self.baseline[key] = float(event[key])
        return self

    def measure(self, model, tokenizer, step: int, heldout: dict[str, float]) -> dict[str, Any]:
        """One eval step's event: task scores, generations, and the threshold check against the base.

        ``heldout`` maps ``domain`` / ``general`` to this step's held-out loss (when measured).
        """
        event: dict[str, Any] = {"step": step}
        started = time.monotonic()
        by_role: dict[str, list[float]] = {"domain": [], "general": []}
        for prepared in self.tasks:
            result = score_prepared(model, tokenizer, prepared, self.batch_size, quiet=True)
            event.update(task_event_keys(result.name, result.metrics))
            by_role.setdefault(result.role, []).append(result.metrics["acc"])
        for role, accs in by_role.items():
            if accs:
                event[f"{role}_task_acc"] = _mean(accs)
        event["task_eval_seconds"] = time.monotonic() - started
        if self.prompts:
            started = time.monotonic()
            outputs = generate(model, tokenizer, self.prompts, self.max_new_tokens)
            event["generations"] = [{"prompt": p, "output": o} for p, o in zip(self.prompts, outputs)]
            event["generation_seconds"] = time.monotonic() - started
        event.update(self.check({**{f"heldout_{k}_loss": v for k, v in heldout.items()}, **event}))
        return event

    def check(self, values: dict[str, Any]) -> dict[str, Any]:
        """The changes against the base and the verdict; the first values seen become the base."""
        for key in ("heldout_general_loss", "general_task_acc"):
            if key not in self.baseline and isinstance(values.get(key), (int, float)):
                self.baseline[key] = float(values[key])
        out: dict[str, Any] = {}
        base_loss, loss = self.baseline.get("heldout_general_loss"), values.get("heldout_general_loss")
        if base_loss and isinstance(loss, (int, float)) and math.isfinite(loss):
            out["general_bpb_rise"] = loss / base_loss - 1  # same blocks, same tokenizer: bits per byte's relative rise
        base_acc, acc = self.baseline.get("general_task_acc"), values.get("general_task_acc")
        if base_acc is not None and isinstance(acc, (int, float)):
            out["general_task_acc_change"] = acc - base_acc
        if self.threshold.declared:
            if base_loss and self.threshold.max_general_bpb_rise > 0:  # the limits, drawn on the live panel
                out["retention_general_loss_limit"] = base_loss * (1 + self.threshold.max_general_bpb_rise)
            if base_acc is not None and self.threshold.max_general_task_drop > 0:
                out["retention_general_task_acc_limit"] = base_acc - self.threshold.max_general_task_drop
            crossed = self.threshold.crossed(out.get("general_bpb_rise"), out.get("general_task_acc_change"))
            out["retention"] = "crossed" if crossed else "ok"
            if crossed:
                out["retention_crossed"] = crossed
        return out


def watch_callback(watch: TrainingWatch, loaded, logger, history: list, eval_names: list[str], eval_steps: int):
    """The ``TrainerCallback`` that runs ``watch`` at eval steps, logs its events and acts on the threshold.

    With held-out sets (``eval_names``, the eval datasets' names) it runs once each
    of them was evaluated at a step (the Trainer calls ``on_evaluate`` per set), so
    it sees that step's held-out losses; without them, at every
    ``eval_steps``-th step end, at the start and at the end. Its ``summary()`` is
    what :class:`~cptnb.train.trainer.TrainResult` carries as ``watch``.
    """
    from transformers import TrainerCallback

    class WatchCallback(TrainerCallback):
        def __init__(self):
            self.evaluations: list[dict[str, Any]] = []
            self.task_seconds = 0.0
            self.generation_seconds = 0.0
            self.heldout_seconds = 0.0
            self.best_step: int | None = None  # within the threshold, lowest held-out domain loss
            self.best_domain_loss = math.inf
            self.stopped_at: int | None = None
            self.first_crossed: dict[str, Any] | None = None
            self.last_step: int | None = None
            self.pending: dict[str, float] = {}  # held-out losses of the step being evaluated, per set
            self.pending_step: int | None = None

        def _run(self, state, control, heldout: dict[str, float]) -> None:
            step = state.global_step
            if step == self.last_step:
                return  # this step was measured already (e.g. the final evaluation of a run ending on it)
            self.last_step = step
            event = watch.measure(loaded.model, loaded.tokenizer, step, heldout)
            self.task_seconds += event.get("task_eval_seconds", 0.0)
            self.generation_seconds += event.get("generation_seconds", 0.0)
            self.evaluations.append(event)
            history.append(event)
            logger.log(event)
            if not watch.threshold.declared:
                return
            if event["retention"] == "ok":
                domain = heldout.get("domain", 0.0)
                if step > 0 and (domain <= self.best_domain_loss or not heldout):
                    self.best_step, self.best_domain_loss = step, domain
                    if watch.on_regression == "stop":
                        # transformers' own bookkeeping: checkpoint rotation keeps it, and a stop loads it back.
                        state.best_global_step = step
                return
            if self.first_crossed is None:
                self.first_crossed = event
            what = "; ".join(event["retention_crossed"])
            if watch.on_regression == "stop":
                log.warning("step %d: beyond the retention threshold (%s): stopping; the final model will be the "
                            "best checkpoint within it (%s)", step, what,
                            f"step {self.best_step}" if self.best_step else "none saved: the base model is")
                self.stopped_at = step
                control.should_training_stop = True
            else:
                log.warning("step %d: beyond the retention threshold (%s); training goes on (train.on_regression: "
                            "warn). Roll back to an earlier checkpoint, raise data.replay_share or lower "
                            "train.learning_rate.", step, what)

        def on_train_begin(self, args, state, control, **kw):
            if not eval_names and state.global_step == 0:
                self._run(state, control, {})

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            metrics = metrics or {}
            self.heldout_seconds += sum(float(v) for k, v in metrics.items()
                                        if k.startswith("eval_") and k.endswith("_runtime"))
            if self.pending_step != state.global_step:
                self.pending, self.pending_step = {}, state.global_step
            self.pending.update({k[5:-5]: float(v) for k, v in metrics.items()
                                 if k.startswith("eval_") and k.endswith("_loss")})
            if set(eval_names) <= set(self.pending):
                self._run(state, control, self.pending)

        def on_step_end(self, args, state, control, **kw):  # without held-out sets
            if not eval_names and eval_steps > 0 and state.global_step % eval_steps == 0:
                self._run(state, control, {})

        def on_train_end(self, args, state, control, **kw):
            if not eval_names and self.last_step != state.global_step:
                self._run(state, control, {})  # the end point, as train() measures held-out loss there

        def summary(self, train_seconds: float) -> dict[str, Any]:
            watched = self.task_seconds + self.generation_seconds
            training = max(train_seconds - watched - self.heldout_seconds, 1e-9)
            return {
                "evaluations": len(self.evaluations),
                "tasks": {p.task.name: p.n for p in watch.tasks},
                "prompts": len(watch.prompts),
                "task_eval_seconds": self.task_seconds,
                "generation_seconds": self.generation_seconds,
                "heldout_eval_seconds": self.heldout_seconds,
                "train_seconds": train_seconds,
                "training_seconds": training,  # the run's time without any evaluation
                "overhead_share": watched / training,  # task scores + generations over the training time
                "threshold": watch.threshold.describe() if watch.threshold.declared else None,
                "on_regression": watch.on_regression,
                "baseline": dict(watch.baseline),
                "first_crossed_step": self.first_crossed["step"] if self.first_crossed else None,
                "first_crossed": self.first_crossed.get("retention_crossed") if self.first_crossed else None,
                "stopped_at_step": self.stopped_at,
                "best_step": self.best_step,
            }

    return WatchCallback()
