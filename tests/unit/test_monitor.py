import json
import math

from cptnb.train.monitor import JsonlLogger, LivePlot, MultiLogger, plot_run, read_metrics


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
