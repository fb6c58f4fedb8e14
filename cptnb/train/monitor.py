"""Metric loggers: JSONL (always), a live notebook panel, and a null logger.

Every logger takes the same events, flat dicts with a ``step`` and any of::

    train_loss, learning_rate, grad_norm, heldout_domain_loss, heldout_general_loss,
    tokens_per_second, eta_seconds, train_step_seconds, memory_mb, epoch

and, at eval steps with a :class:`~cptnb.train.watch.TrainingWatch`, task scores
(``task_<name>_<metric>``, ``domain_task_acc``, ``general_task_acc``), the change
against the base (``general_bpb_rise``, ``general_task_acc_change``), the
retention limits (``retention_general_loss_limit``,
``retention_general_task_acc_limit``) and ``generations`` (a list, not plotted).

:class:`LivePlot` draws them with matplotlib into an ``ipywidgets.Image`` that
is replaced in place (no flicker, works in JupyterLab, Colab, Kaggle and VS
Code), throttled to one redraw per ``min_interval_s``; it always writes the
final figure as PNG, which is all a headless run shows. :func:`plot_run`
redraws any finished run from its ``metrics.jsonl``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Protocol, runtime_checkable

log = logging.getLogger(__name__)

LOSS_SERIES = ("train_loss", "heldout_domain_loss", "heldout_general_loss")
LOSS_LABELS = {
    "train_loss": "train",
    "heldout_domain_loss": "held-out domain",
    "heldout_general_loss": "held-out general (forgetting)",
}
# The retention panel: task accuracy during training, the general line beside the domain line.
TASK_SERIES = ("domain_task_acc", "general_task_acc")
TASK_LABELS = {"domain_task_acc": "domain tasks", "general_task_acc": "general tasks (retention)"}
# Limits of the declared retention threshold, drawn dashed under the curve they bound.
LIMIT_SERIES = {"heldout_general_loss": "retention_general_loss_limit",
                "general_task_acc": "retention_general_task_acc_limit"}


@runtime_checkable
class MetricLogger(Protocol):
    """Anything that accepts metric events and can be closed."""

    def log(self, event: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class NullLogger:
    """Accepts and ignores everything (for library use without output)."""

    def log(self, event: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlLogger:
    """Writes one JSON object per event to ``path``, flushed so a killed run keeps its log.

    ``append=True`` continues an existing log (for a resumed run); otherwise it starts afresh.
    """

    def __init__(self, path: str | Path, append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a" if append else "w", encoding="utf-8")

    def log(self, event: dict[str, Any]) -> None:
        self._fh.write(json.dumps(_jsonable(event), ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


class MultiLogger:
    """Sends each event to several loggers."""

    def __init__(self, loggers: Iterable[MetricLogger]):
        self.loggers = [lg for lg in loggers if lg is not None]

    def log(self, event: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log(event)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def _jsonable(event: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in event.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)  # JSON has no NaN/inf; keep them visible as strings
        out[key] = value
    return out


def in_notebook_kernel() -> bool:
    """True inside a Jupyter/Colab/Kaggle/VS Code kernel (where widgets can render)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


class LivePlot:
    """Live training panel for notebooks; a PNG on :meth:`close` everywhere.

    Example::

        plot = LivePlot(png_path="runs/x/loss.png", title="LoRA CPT")
        plot.log({"step": 1, "train_loss": 3.2, "learning_rate": 2e-4})
        plot.close()
    """

    def __init__(
        self, png_path: str | Path | None = None, title: str = "", min_interval_s: float = 1.0, show: bool | None = None
    ):
        self.png_path = Path(png_path) if png_path else None
        self.title = title
        self.min_interval_s = min_interval_s
        self.series: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.latest: dict[str, Any] = {}
        self.redraws = 0
        self._last_draw: float | None = None  # the first event always draws
        self._image = None
        self._status = None
        if show if show is not None else in_notebook_kernel():
            self._open_widget()

    def _open_widget(self) -> None:
        import ipywidgets as widgets
        from IPython.display import display

        self._status = widgets.HTML(value="<i>waiting for the first step…</i>")
        self._image = widgets.Image(format="png", layout=widgets.Layout(max_width="960px"))
        display(widgets.VBox([self._status, self._image]))

    def log(self, event: dict[str, Any]) -> None:
        step = int(event.get("step", 0))
        for key, value in event.items():
            if key == "step" or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            self.series[key].append((step, float(value)))
        self.latest.update(event)
        due = self._last_draw is None or time.monotonic() - self._last_draw >= self.min_interval_s
        if self._image is not None and due:
            self._draw()

    def _draw(self) -> None:
        png = figure_png(self.figure())
        self._image.value = png
        self._status.value = self.status_line()
        self._last_draw = time.monotonic()
        self.redraws += 1

    def status_line(self) -> str:
        parts = [f"step {self.latest.get('step', 0)}"]
        fmt = {
            "train_loss": "loss {:.4f}",
            "domain_task_acc": "domain tasks {:.2f}",
            "general_task_acc": "general tasks {:.2f}",
            "general_bpb_rise": "general bpb {:+.1%}",
            "tokens_per_second": "{:,.0f} tok/s",
            "eta_seconds": "ETA {:.0f} s",
            "memory_mb": "mem {:,.0f} MB",
        }
        for key, pattern in fmt.items():
            value = self.latest.get(key)
            if isinstance(value, (int, float)):
                parts.append(pattern.format(value))
        return " · ".join(parts)

    def figure(self):
        return draw_metrics(self.series, title=f"{self.title}  {self.status_line()}".strip())

    def close(self) -> None:
        if self._image is not None:
            self._draw()
        if self.png_path is not None and self.series:
            self.png_path.parent.mkdir(parents=True, exist_ok=True)
            self.png_path.write_bytes(figure_png(self.figure()))


def _limit_line(ax, series, key: str, color) -> None:
    limit = series.get(LIMIT_SERIES[key])
    if limit:
        steps, values = zip(*limit)
        ax.plot(steps, values, linestyle="--", color=color, linewidth=1, label="retention limit")


def draw_metrics(series: dict[str, list[tuple[int, float]]], title: str = ""):
    """Losses, learning rate, grad norm, throughput (2x2); with task scores a task-accuracy panel too (2x3).

    Uses no pyplot state.
    """
    from matplotlib.figure import Figure

    tasks = any(series.get(k) for k in TASK_SERIES)
    fig = Figure(figsize=(15, 6) if tasks else (10, 6), dpi=90)
    axes = fig.subplots(2, 3 if tasks else 2)
    if tasks:
        loss_ax, task_ax, lr_ax, grad_ax, speed_ax, spare_ax = axes.flat
        spare_ax.set_visible(False)
        for key in TASK_SERIES:
            if series.get(key):
                steps, values = zip(*series[key])
                line = task_ax.plot(steps, values, label=TASK_LABELS[key], marker="o", markersize=4)[0]
                if key in LIMIT_SERIES:
                    _limit_line(task_ax, series, key, line.get_color())
        task_ax.set_title("task accuracy (first items of each task)")
        task_ax.set_xlabel("step")
        task_ax.legend(fontsize=8)
    else:
        loss_ax, lr_ax, grad_ax, speed_ax = axes.flat
    for key in LOSS_SERIES:
        if series.get(key):
            steps, values = zip(*series[key])
            marker = "o" if key != "train_loss" else None
            line = loss_ax.plot(steps, values, label=LOSS_LABELS[key], marker=marker, markersize=4)[0]
            if key in LIMIT_SERIES:
                _limit_line(loss_ax, series, key, line.get_color())
    loss_ax.set_title("loss (nats/token)")
    loss_ax.set_xlabel("step")
    if any(series.get(k) for k in LOSS_SERIES):
        loss_ax.legend(fontsize=8)
    for ax, key, label in (
        (lr_ax, "learning_rate", "learning rate"),
        (grad_ax, "grad_norm", "grad norm"),
        (speed_ax, "tokens_per_second", "tokens / s"),
    ):
        if series.get(key):
            steps, values = zip(*series[key])
            ax.plot(steps, values)
        ax.set_title(label)
        ax.set_xlabel("step")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _metrics_lines(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(raw line, event) for every readable line; a line torn by a killed run is skipped with a warning."""
    if not path.is_file():
        return []
    parsed = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s: skipped an unreadable line (a run killed while writing it?): %.80s", path, line)
            continue
        # JsonlLogger writes NaN/inf as strings (JSON has no such numbers): turn them back into floats.
        parsed.append((line, {k: float(v) if v in ("nan", "inf", "-inf") else v for k, v in event.items()}))
    return parsed


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Events of a metrics.jsonl in order (NaN/inf restored; a torn line skipped); [] when there is no file."""
    return [event for _, event in _metrics_lines(Path(path))]


def last_logged_step(path: str | Path) -> int | None:
    """The highest ``step`` in a metrics.jsonl, or None when it has none."""
    steps = [e["step"] for e in read_metrics(path) if isinstance(e.get("step"), int)]
    return max(steps) if steps else None


def trim_metrics(path: str | Path, last_step: int) -> list[dict[str, Any]]:
    """Keep the events of steps <= ``last_step`` in the metrics file and return them.

    A resumed run replays the steps after its checkpoint; without trimming, the
    steps the killed run logged after that checkpoint would appear twice. A last
    line torn by the kill is dropped too.
    """
    path = Path(path)
    if not path.is_file():
        return []
    kept = [(line, event) for line, event in _metrics_lines(path) if int(event.get("step", 0)) <= last_step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(f"{line}\n" for line, _ in kept), encoding="utf-8")
    os.replace(tmp, path)  # atomic: a second kill now leaves the old file or the new one, never half of it
    return [event for _, event in kept]


def plot_run(metrics_path: str | Path, png_path: str | Path | None = None, title: str = ""):
    """Redraw a finished (or running) run from its metrics.jsonl; optionally save a PNG."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for event in read_metrics(metrics_path):
        for key, value in event.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                series[key].append((int(event.get("step", 0)), float(value)))
    fig = draw_metrics(series, title=title)
    if png_path:
        Path(png_path).write_bytes(figure_png(fig))
    return fig
