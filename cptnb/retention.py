"""The declared retention threshold: how much general ability a run may lose, decided before training.

Seeds 002 and 003: decide in advance how much general regression is acceptable
(1-2 accuracy points may be noise, 5 or more is catastrophic), watch it while
training and judge the result against it. Two measures, either or both:

* held-out general bits per byte, as a relative rise over the base
  (``train.max_general_bpb_rise``, 0.02 = 2%);
* the mean accuracy of the role=general tasks, as a drop in points
  (``train.max_general_task_drop``, 0.05 = 5 points).

During training (:mod:`cptnb.train.watch`) the rise is that of the held-out
general *loss* on the same packed blocks: with the same texts and the same
tokenizer, bits per byte is the loss per token times a constant (tokens / bytes
/ ln 2), so both rise by the same share. ``cptnb compare`` checks the bits per
byte of the two results files (:func:`cptnb.evaluate.compare.retention`).

This module holds no model code: the recipe's checks of the watch settings
(:func:`watch_problems`, called by ``TrainConfig``) and the threshold itself.

Example::

    threshold = RetentionThreshold(max_general_bpb_rise=0.02)
    threshold.crossed(bpb_rise=0.031, task_change=None)  # ['held-out general bits per byte +3.1% (limit +2.0%)']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ON_REGRESSION = ("warn", "stop")
TRACKERS = ("tensorboard", "trackio", "wandb", "mlflow")


@dataclass(frozen=True)
class RetentionThreshold:
    """The largest acceptable general regression; a 0 field is not checked."""

    max_general_bpb_rise: float = 0.0  # relative rise of held-out general bits per byte, 0.02 = 2%
    max_general_task_drop: float = 0.0  # drop of mean general-task accuracy, 0.05 = 5 points

    @classmethod
    def from_config(cls, cfg: Any) -> "RetentionThreshold":
        """The threshold a ``TrainConfig`` (or anything with the two fields) declares."""
        return cls(float(getattr(cfg, "max_general_bpb_rise", 0.0) or 0.0),
                   float(getattr(cfg, "max_general_task_drop", 0.0) or 0.0))

    @property
    def declared(self) -> bool:
        return self.max_general_bpb_rise > 0 or self.max_general_task_drop > 0

    def crossed(self, bpb_rise: float | None, task_change: float | None) -> list[str]:
        """What lies beyond the threshold, one phrase per measure; empty when within it.

        ``bpb_rise`` is the relative change of general bits per byte (0.03 = +3%),
        ``task_change`` the change of mean general-task accuracy (-0.06 = 6 points
        lower); None means not measured, which never counts as crossed.
        """
        out = []
        if self.max_general_bpb_rise > 0 and bpb_rise is not None and bpb_rise > self.max_general_bpb_rise:
            out.append(f"held-out general bits per byte {bpb_rise:+.1%} (limit +{self.max_general_bpb_rise:.1%})")
        if self.max_general_task_drop > 0 and task_change is not None and -task_change > self.max_general_task_drop:
            out.append(f"general-task accuracy {100 * task_change:+.1f} points "
                       f"(limit -{100 * self.max_general_task_drop:.1f})")
        return out

    def describe(self) -> str:
        """The threshold in words, e.g. for a report."""
        parts = []
        if self.max_general_bpb_rise > 0:
            parts.append(f"held-out general bits per byte may rise by at most {self.max_general_bpb_rise:.1%}")
        if self.max_general_task_drop > 0:
            points = 100 * self.max_general_task_drop
            parts.append(f"mean general-task accuracy may drop by at most {points:.1f} points")
        return "; ".join(parts) or "no retention threshold declared"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def watch_problems(cfg: Any) -> list[str]:
    """Problems with a ``TrainConfig``'s task-eval, threshold and tracker fields, each with its fix."""
    p: list[str] = []
    if not (isinstance(cfg.task_eval_limit, int) and not isinstance(cfg.task_eval_limit, bool)
            and cfg.task_eval_limit >= 0):
        p.append(f"task_eval_limit must be an integer >= 0 (0: no task in training), got {cfg.task_eval_limit!r}")
    if not (isinstance(cfg.task_eval_names, list) and all(isinstance(n, str) for n in cfg.task_eval_names)):
        p.append(f"task_eval_names must be a list of task names such as [general_en], got {cfg.task_eval_names!r}")
    for name in ("max_general_bpb_rise", "max_general_task_drop"):
        value = getattr(cfg, name)
        if not (_number(value) and 0 <= value < 1):
            p.append(f"{name} must be a share in [0, 1) (0.02 = 2%; 0 means not checked), got {value!r}")
    if cfg.on_regression not in ON_REGRESSION:
        p.append(f"on_regression must be one of {', '.join(ON_REGRESSION)}; got {cfg.on_regression!r}")
    if not (isinstance(cfg.report_to, list) and all(isinstance(n, str) for n in cfg.report_to)):
        p.append(f"report_to must be a list of tracker names ({', '.join(TRACKERS)}), got {cfg.report_to!r}")
    else:
        for name in cfg.report_to:
            if name not in TRACKERS:
                p.append(f"report_to: unknown tracker {name!r}; choose from {', '.join(TRACKERS)} (or leave it empty)")
    if p:
        return p
    if cfg.max_general_task_drop > 0 and cfg.task_eval_limit == 0:
        p.append("max_general_task_drop is checked on the tasks scored during training, and task_eval_limit is 0: "
                 "set task_eval_limit > 0 (items per task), or max_general_task_drop to 0")
    threshold = RetentionThreshold.from_config(cfg)
    if cfg.on_regression == "stop" and threshold.declared:
        eval_steps, save_steps = cfg.eval_steps, cfg.save_steps
        if not (_number(eval_steps) and eval_steps > 0):
            p.append("on_regression 'stop' checks the threshold at evaluation steps: set eval_steps > 0")
        elif not (_number(save_steps) and save_steps > 0 and save_steps % eval_steps == 0):
            p.append(f"on_regression 'stop' rolls back to the best checkpoint within the threshold, so checkpoints "
                     f"must fall on evaluation steps: set save_steps to a multiple of eval_steps ({eval_steps}), "
                     f"got save_steps {save_steps!r}")
    return p
