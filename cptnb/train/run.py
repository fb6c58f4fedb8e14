"""A whole recipe from the command line: prepare the corpus, load the model, train, save.

``run_recipe(recipe)`` is what ``cptnb train --config recipe.yaml`` calls, in one
process or in each process of ``torchrun`` / ``accelerate launch`` (see
:mod:`cptnb.train.launch`); the notebooks call the same pieces one cell at a time.
With several processes only the main one prepares the corpus and writes
``recipe.yaml``, ``metrics.jsonl`` and ``loss.png``; the others wait for it and
read the prepared corpus from disk.

The pieces a notebook calls one cell at a time are public here:
:func:`heldout_eval_sets` (held-out text packed for the periodic loss),
:func:`resume_point` (which checkpoint a resume continues from) and
:func:`run_logger` (``metrics.jsonl`` + the live panel, trimmed and redrawn
for a resumed session). Example of a resumed session in a notebook::

    point = resume_point(out, recipe.train)  # the newest complete checkpoint, or None: start over
    logger = run_logger(out, point)          # metrics.jsonl kept up to its step, the panel redrawn from it
    train(loaded, blocks, recipe.train, eval_datasets=heldout_eval_sets(prepared, tok, 256), logger=logger,
          resume=point.resume_from)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from cptnb.config import Recipe, TrainConfig
from cptnb.data.documents import Document
from cptnb.data.pack import pack_documents
from cptnb.data.pipeline import prepare
from cptnb.evaluate.heldout import evenly
from cptnb.models.loading import cuda_available, load_model, load_tokenizer, resolve_source
from cptnb.train.checkpoints import check_resumable, resolve_checkpoint
from cptnb.train.monitor import JsonlLogger, LivePlot, MetricLogger, MultiLogger, NullLogger, read_metrics, trim_metrics
from cptnb.train.report import overhead_sentence, write_run_report
from cptnb.train.trainer import TrainResult
from cptnb.train.watch import TrainingWatch
from cptnb.vocab.extend import extended_model_config
from cptnb.vocab.stage import train_with_vocab

log = logging.getLogger(__name__)


@dataclass
class _Corpus:
    """The parts of a prepared corpus that training needs."""

    train: Any  # datasets.Dataset of packed blocks
    heldout_domain: list[str]
    heldout_general: list[str]


def _read_texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _load_prepared(data_dir: Path) -> _Corpus:
    """Read back what the main process's ``prepare`` wrote (for the other processes)."""
    from datasets import load_from_disk

    return _Corpus(
        train=load_from_disk(str(data_dir / "train")),
        heldout_domain=_read_texts(data_dir / "heldout_domain.jsonl"),
        heldout_general=_read_texts(data_dir / "heldout_general.jsonl"),
    )


def _changed_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    changes = []
    for section in sorted(set(old) | set(new)):
        before, after = old.get(section) or {}, new.get(section) or {}
        for key in sorted(set(before) | set(after)):
            if key != "output_dir" and before.get(key) != after.get(key):
                changes.append(f"{section}.{key}: {before.get(key)!r} -> {after.get(key)!r}")
    return changes


def _warn_if_recipe_changed(saved: Path, recipe: Recipe) -> None:
    if not saved.is_file():
        return
    changes = _changed_fields(yaml.safe_load(saved.read_text(encoding="utf-8")) or {}, recipe.to_dict())
    if changes:
        log.warning(
            "resuming with a recipe that differs from the one the checkpoint was trained with (%s); "
            "the curve will not match an uninterrupted run", "; ".join(changes)
        )


def _main_process_setup(recipe: Recipe, out: Path, point: ResumePoint, model_cfg=None) -> _Corpus:
    """What only the main process does: record the recipe and prepare the data."""
    out.mkdir(parents=True, exist_ok=True)
    if point.checkpoint is not None:
        _warn_if_recipe_changed(out / "recipe.yaml", recipe)
    recipe.to_yaml(out / "recipe.yaml")
    model_cfg = model_cfg or recipe.model  # the extended base when model.vocab adds tokens (cptnb.vocab)
    resolve_source(model_cfg)  # builds an alias model once, before the other processes load it
    tokenizer = load_tokenizer(model_cfg)
    prepared = prepare(recipe.data, tokenizer, out / "data", block_tokens=recipe.model.max_seq_len_tokens)
    return _Corpus(prepared.packed.dataset, prepared.heldout_domain, prepared.heldout_general)


def heldout_eval_sets(
    corpus, tokenizer, block_tokens: int, max_docs: int = 0, packing: str = "concat"
) -> dict[str, Any]:
    """The held-out documents packed like training text, for the periodic held-out loss of :func:`train`.

    ``corpus`` is what ``prepare`` returned (anything with ``heldout_domain`` and
    ``heldout_general`` lists of texts). Packing them into blocks of
    ``block_tokens`` makes the held-out loss comparable with the train loss.
    ``max_docs`` > 0 keeps that many documents per set, spread evenly over it
    (CPU time grows with it); sets without a full block are left out. ``packing``
    is the recipe's ``data.packing``, so held-out loss is measured as training sees text.
    Returns ``{"domain": Dataset, "general": Dataset}``.

    Example::

        eval_sets = heldout_eval_sets(prepared, loaded.tokenizer, 256, max_docs=4)
    """
    eval_sets = {}
    for name, texts in (("domain", corpus.heldout_domain), ("general", corpus.heldout_general)):
        docs = [Document(t, name) for t in evenly(texts, max_docs)]
        packed = pack_documents(docs, tokenizer, block_tokens, packing=packing)
        if len(packed.dataset):
            eval_sets[name] = packed.dataset
    return eval_sets


@dataclass
class ResumePoint:
    """Where a training session continues: a complete checkpoint and its step, or nothing (start at step 0)."""

    checkpoint: Path | None
    step: int  # optimizer step the checkpoint holds; 0 without one

    @property
    def resume_from(self) -> str | bool:
        """What :func:`train`'s ``resume`` takes for this point: the checkpoint's path, or False."""
        return str(self.checkpoint) if self.checkpoint is not None else False


def resume_point(output_dir: str | Path, cfg: TrainConfig, resume: bool | str = "auto") -> ResumePoint:
    """The checkpoint a resumed run in ``output_dir`` continues from, checked before any work starts.

    ``resume`` is False (start over), True / "auto" (the newest *complete*
    ``checkpoint-N``; one cut off while saving is skipped; none found is said
    and means step 0) or a checkpoint path. A checkpoint that already reached
    ``cfg.max_steps`` raises :class:`~cptnb.errors.CptnbError` with what to change.
    """
    checkpoint = resolve_checkpoint(Path(output_dir), resume)
    step = check_resumable(checkpoint, cfg) if checkpoint is not None else 0
    return ResumePoint(checkpoint, step)


def run_logger(
    output_dir: str | Path, resume: ResumePoint | None = None, title: str = "", also: Iterable[MetricLogger] = ()
) -> MultiLogger:
    """The loggers of one training session in ``output_dir``: ``metrics.jsonl`` and the live panel (``loss.png``).

    Continuing from a checkpoint (``resume`` holds one), the steps logged after
    it were lost with the old session and will be trained again, so
    ``metrics.jsonl`` keeps only the events up to the checkpoint's step and
    appends; the panel is redrawn from those, so it shows the whole run. Without
    a checkpoint ``metrics.jsonl`` starts afresh. ``also`` adds more loggers.
    """
    out = Path(output_dir)
    resuming = resume is not None and resume.checkpoint is not None
    earlier = trim_metrics(out / "metrics.jsonl", resume.step) if resuming else []
    plot = LivePlot(png_path=out / "loss.png", title=title)
    for event in earlier:  # a resumed run's panel shows the whole curve, not only the steps after the checkpoint
        plot.log(event)
    return MultiLogger([JsonlLogger(out / "metrics.jsonl", append=resuming), plot, *also])


def run_recipe(recipe: Recipe, resume: bool | str = False) -> TrainResult:
    """Prepare ``recipe.data``, load ``recipe.model`` and train with ``recipe.train``.

    Writes into ``recipe.train.output_dir``: ``recipe.yaml`` (what ran), ``data/``
    (the prepared corpus and its report), ``metrics.jsonl``, ``loss.png``,
    ``train_report.md`` (evaluations during training, the retention verdict, their cost),
    checkpoints, and ``adapter/`` or ``model/``. ``resume`` is False, True/"auto"
    (the last complete checkpoint there, if any) or a checkpoint path; a resumed
    run keeps the metrics up to its checkpoint and appends the rest.
    """
    from accelerate import PartialState

    # One process, or this process's rank under torchrun / accelerate launch. Without cpu=True accelerate
    # ignores torchrun's environment on a machine without GPUs (gloo then needs asking for).
    state = PartialState(cpu=not cuda_available())
    out = Path(recipe.train.output_dir)
    point = resume_point(out, recipe.train, resume)  # fails before data preparation
    with state.main_process_first():
        model_cfg = extended_model_config(recipe, out, build=state.is_main_process)  # recipe.model without new tokens
        corpus = (_main_process_setup(recipe, out, point, model_cfg) if state.is_main_process
                  else _load_prepared(out / "data"))
    loaded = load_model(model_cfg)  # logs its one-line summary
    block = recipe.model.max_seq_len_tokens
    eval_sets = (heldout_eval_sets(corpus, loaded.tokenizer, block, packing=recipe.data.packing)
                 if recipe.train.eval_steps else {})
    logger = run_logger(out, point) if state.is_main_process else NullLogger()
    # Task scores, generations and the retention threshold at the eval steps; a resumed run's base is in its metrics.
    earlier = read_metrics(out / "metrics.jsonl") if point.checkpoint is not None and state.is_main_process else []
    watch = TrainingWatch.from_recipe(recipe, loaded.tokenizer, earlier)
    try:
        result = train_with_vocab(loaded, corpus.train, recipe, eval_datasets=eval_sets, logger=logger,
                                  resume=point.resume_from, watch=watch)  # train(), after model.vocab's first stage
    finally:
        logger.close()
    if state.is_main_process:
        report = write_run_report(out, read_metrics(out / "metrics.jsonl"), result.watch, title=str(out))
        log.info("run report: %s", report)
        if result.watch:
            log.info(overhead_sentence(result.watch))
    return result
