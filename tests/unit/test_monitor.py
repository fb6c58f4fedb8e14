import json
import math
import sys

import pytest

from cptnb.config import TrainConfig
from cptnb.train.monitor import (
    JsonlLogger,
    LivePlot,
    MultiLogger,
    in_notebook_kernel,
    last_logged_step,
    plot_run,
    read_metrics,
)
from cptnb.train.run import resume_point, run_logger


def _events():
    for step in range(1, 11):
        event = {"step": step, "train_loss": 4.0 - 0.1 * step, "learning_rate": 1e-3 * step / 10, "grad_norm": 1.0}
        if step % 5 == 0:
            event["heldout_domain_loss"] = 4.1 - 0.1 * step
            event["heldout_general_loss"] = 3.0 + 0.01 * step
        yield event


def test_live_plot_collects_series_and_redraws_in_place(tmp_path):
    plot = LivePlot(png_path=tmp_path / "loss.png", min_interval_s=0.0, show=True)
    first_image = plot._image
    for event in _events():
        plot.log(event)
    plot.close()
    assert plot._image is first_image  # one widget, updated in place
    assert plot.redraws == 11  # every event (interval 0) plus the final draw
    assert [s for s, _ in plot.series["heldout_domain_loss"]] == [5, 10]
    assert plot.series["train_loss"][-1] == (10, 3.0)
    assert plot._image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_live_plot_throttles_redraws(tmp_path):
    plot = LivePlot(min_interval_s=3600, show=True)
    for event in _events():
        plot.log(event)
    assert plot.redraws == 1  # only the first event drew; the rest waited for the interval
    assert len(plot.series["train_loss"]) == 10


def test_headless_plot_shows_nothing_but_writes_png(tmp_path):
    plot = LivePlot(png_path=tmp_path / "p.png", show=False)
    for event in _events():
        plot.log(event)
    plot.close()
    assert plot.redraws == 0 and (tmp_path / "p.png").is_file()


def test_jsonl_round_trip_keeps_nan_visible(tmp_path):
    path = tmp_path / "m.jsonl"
    logger = MultiLogger([JsonlLogger(path)])
    logger.log({"step": 1, "train_loss": 2.5})
    logger.log({"step": 2, "train_loss": float("nan")})
    logger.close()
    lines = path.read_text().splitlines()
    assert json.loads(lines[1])["train_loss"] == "nan"
    events = read_metrics(path)
    assert events[0]["train_loss"] == 2.5 and math.isnan(events[1]["train_loss"])


def test_plot_run_redraws_a_finished_run(tmp_path):
    path = tmp_path / "m.jsonl"
    logger = JsonlLogger(path)
    for event in _events():
        logger.log(event)
    logger.close()
    fig = plot_run(path, tmp_path / "again.png")
    loss_ax = fig.axes[0]
    assert len(loss_ax.lines) == 3  # train, held-out domain, held-out general
    assert list(loss_ax.lines[0].get_xdata()) == list(range(1, 11))
    assert (tmp_path / "again.png").is_file()


def test_read_metrics_skips_a_torn_last_line_with_a_warning(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "train_loss": 5.0 - s / 10}) for s in (1, 2, 3)]
    path.write_text("\n".join(lines) + '\n\n{"step": 4, "train_lo')  # a blank line, then a run killed mid-write
    with caplog.at_level("WARNING", logger="cptnb.train.monitor"):
        events = read_metrics(path)
    assert [(e["step"], e["train_loss"]) for e in events] == [(1, 4.9), (2, 4.8), (3, 4.7)]
    assert last_logged_step(path) == 3
    assert any(str(path) in r.getMessage() and "skipped an unreadable line" in r.getMessage() for r in caplog.records)
    assert read_metrics(tmp_path / "absent.jsonl") == [] and last_logged_step(tmp_path / "absent.jsonl") is None


class _Shell:
    """Stands in for IPython's shell: a terminal IPython has no ``kernel``, a Jupyter one does."""

    def __init__(self, kernel: bool):
        if kernel:
            self.kernel = object()


@pytest.mark.parametrize(("shell", "expected"), [(None, False), (_Shell(kernel=False), False), (_Shell(kernel=True), True)])
def test_notebook_detection_needs_a_kernel(monkeypatch, shell, expected):
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    assert in_notebook_kernel() is expected
    plot = LivePlot()  # show=None: a widget only inside a kernel
    assert (plot._image is not None) is expected


def test_notebook_detection_without_ipython(monkeypatch):
    monkeypatch.setitem(sys.modules, "IPython", None)  # import IPython now raises ImportError
    assert in_notebook_kernel() is False


def test_status_line_shows_the_latest_numbers_and_reaches_the_widget():
    plot = LivePlot(min_interval_s=0.0, show=True)
    assert plot.status_line() == "step 0"
    plot.log({"step": 7, "train_loss": 3.14159, "tokens_per_second": 12345.6, "eta_seconds": 42.4, "memory_mb": 2048.4})
    plot.log({"step": 7, "heldout_domain_loss": 3.5})  # an eval event keeps the step's train numbers
    line = "step 7 · loss 3.1416 · 12,346 tok/s · ETA 42 s · mem 2,048 MB"
    assert plot.status_line() == line
    assert plot._status.value == line
    assert plot.figure()._suptitle.get_text() == line


def test_a_nan_loss_reaches_the_panel_and_the_redrawn_plot(tmp_path):
    path = tmp_path / "m.jsonl"
    plot = LivePlot(png_path=tmp_path / "live.png", show=False)
    logger = MultiLogger([JsonlLogger(path), plot])
    for step, loss in enumerate([3.0, 2.5, float("nan"), float("inf")], 1):
        logger.log({"step": step, "train_loss": loss})
    logger.close()
    assert [s for s, _ in plot.series["train_loss"]] == [1, 2, 3, 4]
    assert "loss inf" in plot.status_line()
    assert (tmp_path / "live.png").read_bytes()[:4] == b"\x89PNG"
    train_line = plot_run(path).axes[0].lines[0]  # read back from JSONL, where NaN/inf are strings
    assert list(train_line.get_xdata()) == [1, 2, 3, 4]
    y = list(train_line.get_ydata())
    assert y[:2] == [3.0, 2.5] and math.isnan(y[2]) and y[3] == math.inf


def test_a_resumed_run_panel_starts_with_the_earlier_steps(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoint-4").mkdir(parents=True)
    (out / "checkpoint-4" / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    metrics = out / "metrics.jsonl"
    killed = [json.dumps({"step": s, "train_loss": 5.0 - s / 10}) for s in range(1, 7)]
    metrics.write_text("\n".join(killed) + '\n{"step": 7, "tr')  # killed after step 6; its checkpoint is step 4
    point = resume_point(out, TrainConfig(max_steps=10))
    assert point.step == 4
    logger = run_logger(out, point)
    for s in (5, 6):  # the steps the resumed session trains again
        logger.log({"step": s, "train_loss": 1.0})
    logger.close()
    plot = next(lg for lg in logger.loggers if isinstance(lg, LivePlot))
    assert plot.series["train_loss"] == [(1, 4.9), (2, 4.8), (3, 4.7), (4, 4.6), (5, 1.0), (6, 1.0)]
    assert [(e["step"], e["train_loss"]) for e in read_metrics(metrics)] == plot.series["train_loss"]
    assert (out / "loss.png").is_file()
    fresh = run_logger(out, resume_point(out, TrainConfig(max_steps=10), resume=False))  # starting over
    fresh.close()
    assert read_metrics(metrics) == [] and not next(lg for lg in fresh.loggers if isinstance(lg, LivePlot)).series
