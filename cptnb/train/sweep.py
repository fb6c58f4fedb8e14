"""The forgetting sweep (`cptnb sweep`, notebook 04): replay shares and weight interpolation on one frontier.

From one recipe: one corpus and one training run per replay share (the same
steps, seed and schedule; only the share of general text differs), every run
measured on the same held-out domain and general documents as the base, then
the no-replay run interpolated toward the base at each alpha
(:func:`cptnb.models.interpolate.interpolated`: evaluation only, no training).
The points, their Pareto front, the check of the remedy goal and the
recommendation against the declared threshold are written by
:func:`cptnb.evaluate.frontier.write_frontier`.

The steps are separate functions so that notebook 04 shows each one; :func:`run_sweep` chains them.

Example::

    recipe = Recipe.from_sample("smollm2_vi_forgetting_cpu")
    payload = run_sweep(recipe, SweepConfig(replay_shares=[0.0, 0.2], alphas=[0.5]))
    payload["verdict"]
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cptnb.config import EvalConfig, Recipe
from cptnb.configbase import Section, option, positive
from cptnb.data.pipeline import prepare
from cptnb.evaluate.frontier import FrontierPoint, point_from_measurements, write_frontier
from cptnb.evaluate.heldout import evenly, measure
from cptnb.models.interpolate import interpolated
from cptnb.models.loading import LoadedModel, load_model, load_tokenizer
from cptnb.train.monitor import JsonlLogger, MetricLogger
from cptnb.train.trainer import train

log = logging.getLogger(__name__)


def _numbers(values: Any) -> Any:
    """A list given on the command line arrives as strings: read numbers as numbers, leave anything else."""
    if not isinstance(values, list):
        return values
    out = []
    for v in values:
        try:
            out.append(float(v) if isinstance(v, str) else v)
        except ValueError:
            out.append(v)
    return out


@dataclass
class SweepConfig(Section):
    """What the forgetting sweep varies, measures and judges against."""

    replay_shares: list = option([0.0, 0.05, 0.1, 0.2],
                                 "Replay shares of training tokens, one training run each; 0 (no remedy) must be one.")
    alphas: list = option([0.25, 0.5, 0.75], "Weights toward the trained model (0 = base, 1 = as trained) at which the "
                          "no-replay run is evaluated; evaluation only, no training.")
    max_general_regression: float = option(
        0.01, "Largest acceptable rise of held-out general bits per byte, as a fraction (0.01 = 1%), declared before "
        "the sweep; the recommendation is judged against it (the recipe's train.max_general_bpb_rise wins when set).")
    heldout_domain_docs: int = option(4, "Held-out domain documents scored per model (spread evenly); 0 means all.")
    heldout_general_docs: int = option(20, "Held-out general documents scored per model; 0 means all.")
    n_boot: int = option(4000, "Bootstrap resamples of the held-out documents for each 95% interval.")
    out_dir: str = option("", "Folder for the corpora, runs and frontier files; empty means <train.output_dir>/sweep.")

    def __post_init__(self) -> None:
        self.replay_shares, self.alphas = _numbers(self.replay_shares), _numbers(self.alphas)
        super().__post_init__()

    def problems(self) -> list[str]:
        p: list[str] = []
        shares = self.replay_shares if isinstance(self.replay_shares, list) else []
        if not shares or not all(isinstance(s, (int, float)) and 0 <= s < 1 for s in shares):
            p.append(f"replay_shares must be a list of shares in [0, 1), e.g. [0, 0.05, 0.1, 0.2]; got "
                     f"{self.replay_shares!r}")
        elif 0 not in shares:
            p.append(f"replay_shares must include 0, the run without remedy that every point is judged against; "
                     f"got {shares}")
        alphas = self.alphas if isinstance(self.alphas, list) else None
        if alphas is None or not all(isinstance(a, (int, float)) and 0 < a < 1 for a in alphas):
            p.append(f"alphas must be a list of weights strictly between 0 (base) and 1 (trained), e.g. [0.5]; got "
                     f"{self.alphas!r}")
        if not (isinstance(self.max_general_regression, (int, float)) and self.max_general_regression >= 0):
            p.append(f"max_general_regression must be a fraction >= 0 (0.01 = 1%), got {self.max_general_regression!r}")
        positive(p, "heldout_domain_docs", self.heldout_domain_docs, allow_zero=True)
        positive(p, "heldout_general_docs", self.heldout_general_docs, allow_zero=True)
        positive(p, "n_boot", self.n_boot)
        return p


def share_recipe(recipe: Recipe, share: float, out: Path) -> Recipe:
    """``recipe`` with replay at ``share`` (no replay sources at 0) and its run folder under ``out``."""
    data = {"replay_share": share, "replay_sources": list(recipe.data.replay_sources) if share else []}
    return recipe.replace(data=data, train={"output_dir": str(out / f"replay{round(100 * share)}")})


def sweep_corpora(recipe: Recipe, shares: list[float], out: str | Path, tokenizer=None) -> dict[float, Any]:
    """One prepared corpus per replay share, in its run folder (``out/replay<N>/data``, as ``cptnb train`` does).

    The domain documents and held-out files are the same for every share; only the replay text added differs.
    """
    tokenizer = tokenizer or load_tokenizer(recipe.model)
    block = recipe.data.block_tokens or recipe.model.max_seq_len_tokens
    corpora = {}
    for share in shares:
        run = share_recipe(recipe, share, Path(out))
        corpora[share] = prepare(run.data, tokenizer, Path(run.train.output_dir) / "data", block_tokens=block)
    return corpora


def heldout_sets(corpora: dict[float, Any], cfg: SweepConfig) -> dict[str, list[str]]:
    """The held-out documents every model is scored on: the no-replay corpus's, spread evenly."""
    corpus = corpora[0.0]
    return {"domain": evenly(list(corpus.heldout_domain), cfg.heldout_domain_docs),
            "general": evenly(list(corpus.heldout_general), cfg.heldout_general_docs)}


def measurement_config(recipe: Recipe) -> EvalConfig:
    """The recipe's scoring settings without generations (a sweep scores many models; prompts cost time each)."""
    return recipe.eval.replace(prompts=[])


@dataclass
class SweepRun:
    """One trained run of the sweep, still loaded (for interpolation), with what it cost."""

    share: float
    loaded: LoadedModel
    after: dict[str, Any]
    train_seconds: float
    eval_seconds: float
    steps: int


def train_share(recipe: Recipe, share: float, corpus, heldout: dict[str, list[str]], out: str | Path,
                logger: MetricLogger | None = None) -> SweepRun:
    """Load a fresh base, train it on ``corpus`` with ``recipe.train`` (run folder under ``out``), measure it.

    The run folder ends like a ``cptnb train`` run (``recipe.yaml``, ``data/``, ``model/`` or ``adapter/``,
    ``metrics.jsonl``), so ``cptnb export --run_dir`` exports it, at any ``interpolation_alpha``.
    """
    run_recipe = share_recipe(recipe, share, Path(out))
    run_recipe.to_yaml(Path(run_recipe.train.output_dir) / "recipe.yaml")  # what cptnb export reads for the card
    loaded = load_model(run_recipe.model)
    logger = logger if logger is not None else JsonlLogger(Path(run_recipe.train.output_dir) / "metrics.jsonl")
    started = time.monotonic()
    result = train(loaded, corpus.packed.dataset, run_recipe.train, logger=logger)
    logger.close()
    train_seconds = time.monotonic() - started
    started = time.monotonic()
    after = measure(loaded.model, loaded.tokenizer, heldout, measurement_config(recipe))
    return SweepRun(share, loaded, after, train_seconds, time.monotonic() - started, result.steps)


def run_point(run: SweepRun, before: dict[str, Any], n_boot: int = 4000) -> FrontierPoint:
    """The frontier point of a trained run as it is (alpha 1)."""
    return point_from_measurements(f"replay {run.share:.0%}", run.share, 1.0, before, run.after, run.train_seconds,
                                   n_boot=n_boot)


def alpha_points(run: SweepRun, base: Any, alphas: list[float], heldout: dict[str, list[str]],
                 before: dict[str, Any], recipe: Recipe, n_boot: int = 4000) -> list[FrontierPoint]:
    """``run``'s weights interpolated toward the base at each alpha, each measured like a run (no training).

    ``base`` is None for a LoRA run (PEFT keeps the base weights) and the base model for a full run.
    """
    points = []
    for alpha in alphas:
        with interpolated(run.loaded.model, alpha, base=base):
            after = measure(run.loaded.model, run.loaded.tokenizer, heldout, measurement_config(recipe))
        points.append(point_from_measurements(f"replay {run.share:.0%} · alpha {alpha:g}", run.share, alpha,
                                              before, after, n_boot=n_boot))
    return points


def run_sweep(recipe: Recipe, cfg: SweepConfig | None = None,
              logger_for: Callable[[float, Path], MetricLogger] | None = None) -> dict[str, Any]:
    """Every step above from one recipe; writes ``frontier.json/.md/.png`` into the sweep folder; returns the payload.

    ``logger_for(share, run_dir)`` makes each run's logger (default: ``metrics.jsonl`` only).
    """
    cfg = cfg or SweepConfig()
    out = Path(cfg.out_dir or Path(recipe.train.output_dir) / "sweep")
    started = time.monotonic()
    shares = sorted(float(s) for s in cfg.replay_shares)
    corpora = sweep_corpora(recipe, shares, out)
    heldout = heldout_sets(corpora, cfg)
    base = load_model(recipe.model)  # a fresh LoRA adapter changes nothing yet: this scores the base model
    before = measure(base.model, base.tokenizer, heldout, measurement_config(recipe))
    start = base.model if recipe.model.method == "full" else None  # a full run interpolates toward these weights
    del base
    points, seconds = [], {}
    for share in shares:
        run_dir = Path(share_recipe(recipe, share, out).train.output_dir)
        logger = logger_for(share, run_dir) if logger_for else None
        run = train_share(recipe, share, corpora[share], heldout, out, logger)
        points.append(run_point(run, before, cfg.n_boot))
        seconds[f"replay {share:.0%}"] = {"train": run.train_seconds, "eval": run.eval_seconds}
        if share == 0.0 and cfg.alphas:
            t0 = time.monotonic()
            points += alpha_points(run, start, [float(a) for a in cfg.alphas], heldout, before, recipe, cfg.n_boot)
            seconds["alpha sweep"] = {"train": 0.0, "eval": time.monotonic() - t0}
        del run
        gc.collect()
        # Written after every run (the no-replay run comes first), so a long sweep shows its frontier as it grows.
        extra = {"recipe": recipe.to_dict(), "sweep": cfg.to_dict(), "seconds": seconds,
                 "total_seconds": time.monotonic() - started, "complete": share == shares[-1]}
        payload = write_frontier(out, points, declared_threshold(recipe, cfg), title=sweep_title(recipe), extra=extra)
    return payload


def declared_threshold(recipe: Recipe, cfg: SweepConfig) -> float:
    """The general-regression threshold the frontier is judged against.

    The recipe's own retention threshold (``train.max_general_bpb_rise``, the
    same quantity watched during training) when it sets one, else the sweep's
    ``max_general_regression``.
    """
    return getattr(recipe.train, "max_general_bpb_rise", 0.0) or cfg.max_general_regression


def sweep_title(recipe: Recipe) -> str:
    """The frontier's title: model, method and the training budget every run had."""
    t = recipe.train
    return (f"{recipe.model.name} · {recipe.model.method} · lr {t.learning_rate:g} · {t.max_steps} steps of "
            f"{t.per_device_batch_size} x {recipe.data.block_tokens or recipe.model.max_seq_len_tokens} tokens")
