"""Experiment trackers (``train.report_to``): TensorBoard, Trackio, W&B, MLflow through transformers' integrations.

The trackers get the kit's own events, the ones ``metrics.jsonl`` holds
(train loss, learning rate, held-out losses, task scores, generations, the
retention check), not only what the Trainer logs: :class:`TrackerBridge` holds
transformers' integration callbacks (``TensorBoardCallback``,
``TrackioCallback``, ``WandbCallback``, ``MLflowCallback``), lets the Trainer
drive their setup and teardown, and hands them each event as a ``logs`` dict.
Names follow the integrations' convention (:func:`tracker_logs`)::

    train_loss -> train/loss      learning_rate -> train/learning_rate
    heldout_general_loss -> eval/heldout_general_loss      task_general_en_acc -> eval/task_general_en_acc

Offline by default, nothing leaves the machine unless you ask for it
(:func:`offline_defaults`; a variable you set yourself always wins):
TensorBoard writes ``<output_dir>/tensorboard``; Trackio keeps its local SQLite
store in ``<output_dir>/trackio`` (a Space only with ``TRACKIO_SPACE_ID``);
W&B runs in offline mode (files in ``<output_dir>/wandb``) unless you are logged
in (``WANDB_API_KEY`` or ``wandb login``) or set ``WANDB_MODE``; MLflow writes
a local store in ``<output_dir>/mlruns`` unless ``MLFLOW_TRACKING_URI`` is set.

Example::

    recipe = recipe.replace(train={"report_to": ["tensorboard"]})
    # then: tensorboard --logdir runs/cpt/tensorboard
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import netrc
import os
from pathlib import Path
from typing import Any

from cptnb.errors import ConfigError
from cptnb.retention import TRACKERS

log = logging.getLogger(__name__)

# pip package behind each tracker (tensorboard is in requirements; the others are optional)
PACKAGES = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb", "mlflow": "mlflow"}
_TEXT = {"tensorboard", "wandb"}  # integrations that log strings (the generations); the others drop them with a warning


def check_installed(names: list[str]) -> None:
    """Raise a :class:`~cptnb.errors.ConfigError` naming ``train.report_to`` when a chosen tracker is not installed."""
    missing = [n for n in names if importlib.util.find_spec(PACKAGES[n]) is None]
    if missing:
        raise ConfigError(
            [f"report_to: {name} is not installed in this environment; `pip install {PACKAGES[name]}`, or take it "
             "out of train.report_to" for name in missing],
            "train",
        )


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None  # where `wandb login` keeps the key
    except (OSError, netrc.NetrcParseError):
        return False


def offline_defaults(names: list[str], output_dir: str | Path) -> dict[str, str]:
    """Set the trackers' environment so they stay on this machine, in ``output_dir``; returns what was set.

    Only variables the user has not set are touched.
    """
    out = Path(output_dir).resolve()
    wanted: dict[str, str] = {}
    if "trackio" in names:
        wanted["TRACKIO_DIR"] = str(out / "trackio")
    if "wandb" in names:
        wanted["WANDB_DIR"] = str(out)
        if not _wandb_logged_in():
            wanted["WANDB_MODE"] = "offline"
    if "mlflow" in names:
        wanted["MLFLOW_TRACKING_URI"] = (out / "mlruns").as_uri()
    applied = {k: v for k, v in wanted.items() if k not in os.environ}
    os.environ.update(applied)
    if applied:
        log.info("trackers kept local: %s", ", ".join(f"{k}={v}" for k, v in applied.items()))
    return applied


_EVAL_PREFIXES = ("heldout_", "task_", "domain_task_", "general_task_", "general_bpb_", "generation_", "retention_")


def tracker_logs(event: dict[str, Any], text: bool = False) -> dict[str, Any]:
    """A metrics event as an integration's ``logs``: numbers (and, with ``text``, the generations as strings).

    ``train_loss`` becomes ``loss`` and evaluation keys get the ``eval_`` prefix,
    so that the integrations file them under ``train/`` and ``eval/``.
    """
    logs: dict[str, Any] = {}
    for key, value in event.items():
        if key == "step" or isinstance(value, bool):
            continue
        name = "loss" if key == "train_loss" else f"eval_{key}" if key.startswith(_EVAL_PREFIXES) else key
        if isinstance(value, (int, float)):
            logs[name] = value
        elif key == "generations" and text:
            for i, g in enumerate(value):
                logs[f"eval_generation_{i}"] = f"{g['prompt']} → {g['output']}"
    return logs


def tracker_bridge(names: list[str], output_dir: str | Path):
    """A ``TrainerCallback`` holding the integrations for ``names``, fed the kit's events (None for no tracker).

    Add it to the Trainer's callbacks (it forwards setup and checkpoint events),
    send it every event through :meth:`log`, and :meth:`finish` it after the last one.
    """
    if not names:
        return None
    check_installed(names)
    offline_defaults(names, output_dir)
    from transformers import TrainerCallback
    from transformers.integrations import get_reporting_integration_callbacks

    classes = get_reporting_integration_callbacks(list(names))

    class TrackerBridge(TrainerCallback):
        """transformers' integration callbacks, given metrics.jsonl's events instead of the Trainer's logs."""

        def __init__(self):
            self.trackers = list(zip(names, (cls() for cls in classes)))
            for name, tracker in self.trackers:
                if name == "tensorboard":
                    tracker.logging_dir = tracker.logging_dir or str(Path(output_dir) / "tensorboard")
            self.context: tuple | None = None  # (args, state, control) of the running Trainer
            self.model = None
            self.finished = False

        def _forward(self, event: str, args, state, control, **kw):
            self.context, self.model = (args, state, control), kw.get("model", self.model)
            for _, tracker in self.trackers:
                getattr(tracker, event)(args, state, control, **kw)

        def on_train_begin(self, args, state, control, **kw):
            self._forward("on_train_begin", args, state, control, **kw)

        def on_save(self, args, state, control, **kw):
            self._forward("on_save", args, state, control, **kw)

        def on_log(self, args, state, control, **kw):
            self.context = (args, state, control)  # the Trainer's own logs are not forwarded: log() sends ours

        def log(self, event: dict[str, Any]) -> None:
            """Send one metrics event at its own step to every tracker."""
            if self.context is None or self.finished:
                return
            args, state, control = self.context
            at_step = copy.copy(state)  # the event's own step (an evaluation event may follow the step it measured)
            at_step.global_step = int(event.get("step", state.global_step))
            for name, tracker in self.trackers:
                logs = tracker_logs(event, text=name in _TEXT)
                if logs:
                    tracker.on_log(args, at_step, control, model=self.model, logs=logs)

        def close(self) -> None:
            """Part of the logger protocol: the Trainer finishes the trackers (:meth:`finish`), not the logger."""

        def finish(self) -> None:
            """End every tracker's run (flush and close its files); later events are ignored."""
            if self.context is None or self.finished:
                return
            self.finished = True
            args, state, control = self.context
            for _, tracker in self.trackers:
                tracker.on_train_end(args, state, control, model=self.model)

    return TrackerBridge()


__all__ = ["TRACKERS", "PACKAGES", "check_installed", "offline_defaults", "tracker_logs", "tracker_bridge"]
