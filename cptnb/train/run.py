"""A whole recipe from the command line: prepare the corpus, load the model, train, save.

``run_recipe(recipe)`` is what ``cptnb train --config recipe.yaml`` calls, in one
process or in each process of ``torchrun`` / ``accelerate launch`` (see
:mod:`cptnb.train.launch`); the notebooks call the same pieces one cell at a time.
With several processes only the main one prepares the corpus and writes
``recipe.yaml``, ``metrics.jsonl`` and ``loss.png``; the others wait for it and
read the prepared corpus from disk.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cptnb.config import Recipe
from cptnb.data.documents import Document
from cptnb.data.pack import pack_documents
from cptnb.data.pipeline import prepare
from cptnb.models.loading import cuda_available, load_model, load_tokenizer, resolve_source
from cptnb.train.checkpoints import check_resumable, resolve_checkpoint
from cptnb.train.monitor import JsonlLogger, LivePlot, MetricLogger, MultiLogger, NullLogger, trim_metrics
from cptnb.train.trainer import TrainResult, train

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


def _main_process_setup(recipe: Recipe, out: Path, resume_step: int | None) -> tuple[_Corpus, list[dict[str, Any]]]:
    """What only the main process does: record the recipe, prepare the data, trim the metrics log."""
    out.mkdir(parents=True, exist_ok=True)
    if resume_step is not None:
        _warn_if_recipe_changed(out / "recipe.yaml", recipe)
    recipe.to_yaml(out / "recipe.yaml")
    resolve_source(recipe.model)  # builds an alias model once, before the other processes load it
    tokenizer = load_tokenizer(recipe.model)
    prepared = prepare(recipe.data, tokenizer, out / "data", block_tokens=recipe.model.max_seq_len_tokens)
    earlier = trim_metrics(out / "metrics.jsonl", resume_step) if resume_step is not None else []
    corpus = _Corpus(prepared.packed.dataset, prepared.heldout_domain, prepared.heldout_general)
    return corpus, earlier


def _eval_sets(recipe: Recipe, corpus: _Corpus, tokenizer) -> dict[str, Any]:
    eval_sets = {}
    if recipe.train.eval_steps:
        # Held-out text packed like training text, so the periodic loss is comparable to the train loss.
        for name, texts in (("domain", corpus.heldout_domain), ("general", corpus.heldout_general)):
            packed = pack_documents([Document(t, name) for t in texts], tokenizer, recipe.model.max_seq_len_tokens)
            if len(packed.dataset):
                eval_sets[name] = packed.dataset
    return eval_sets


def _main_logger(out: Path, earlier: list[dict[str, Any]], resuming: bool) -> MetricLogger:
    plot = LivePlot(png_path=out / "loss.png")
    for event in earlier:  # a resumed run's plot shows the whole curve, not only the steps after the checkpoint
        plot.log(event)
    return MultiLogger([JsonlLogger(out / "metrics.jsonl", append=resuming), plot])


def run_recipe(recipe: Recipe, resume: bool | str = False) -> TrainResult:
    """Prepare ``recipe.data``, load ``recipe.model`` and train with ``recipe.train``.

    Writes into ``recipe.train.output_dir``: ``recipe.yaml`` (what ran), ``data/``
    (the prepared corpus and its report), ``metrics.jsonl``, ``loss.png``,
    checkpoints, and ``adapter/`` or ``model/``. ``resume`` is False, True/"auto"
    (the last complete checkpoint there, if any) or a checkpoint path; a resumed
    run keeps the metrics up to its checkpoint and appends the rest.
    """
    from accelerate import PartialState

    # One process, or this process's rank under torchrun / accelerate launch. Without cpu=True accelerate
    # ignores torchrun's environment on a machine without GPUs (gloo then needs asking for).
    state = PartialState(cpu=not cuda_available())
    out = Path(recipe.train.output_dir)
    checkpoint = resolve_checkpoint(out, resume)
    resume_step = check_resumable(checkpoint, recipe.train) if checkpoint else None  # fails before data preparation
    earlier: list[dict[str, Any]] = []
    with state.main_process_first():
        if state.is_main_process:
            corpus, earlier = _main_process_setup(recipe, out, resume_step)
        else:
            corpus = _load_prepared(out / "data")
    loaded = load_model(recipe.model)
    log.info(loaded.summary())
    eval_sets = _eval_sets(recipe, corpus, loaded.tokenizer)
    logger = _main_logger(out, earlier, checkpoint is not None) if state.is_main_process else NullLogger()
    try:
        resume_from = str(checkpoint) if checkpoint else False
        return train(loaded, corpus.train, recipe.train, eval_datasets=eval_sets, logger=logger, resume=resume_from)
    finally:
        logger.close()
