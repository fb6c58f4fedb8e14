"""A whole recipe from the command line: prepare the corpus, load the model, train, save.

``run_recipe(recipe)`` is what ``cptnb train --config recipe.yaml`` calls; the
notebooks call the same pieces one cell at a time.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cptnb.config import Recipe
from cptnb.data.documents import Document
from cptnb.data.pack import pack_documents
from cptnb.data.pipeline import prepare
from cptnb.models import load_model
from cptnb.monitor import JsonlLogger, LivePlot, MultiLogger
from cptnb.train import TrainResult, train

log = logging.getLogger(__name__)


def run_recipe(recipe: Recipe, resume: bool | str = False) -> TrainResult:
    """Prepare ``recipe.data``, load ``recipe.model`` and train with ``recipe.train``.

    Writes into ``recipe.train.output_dir``: ``recipe.yaml`` (what ran), ``data/``
    (the prepared corpus and its report), ``metrics.jsonl``, ``loss.png``,
    checkpoints, and ``adapter/`` or ``model/``.
    """
    out = Path(recipe.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe.to_yaml(out / "recipe.yaml")
    loaded = load_model(recipe.model)
    log.info(loaded.summary())
    prepared = prepare(recipe.data, loaded.tokenizer, out / "data", block_tokens=recipe.model.max_seq_len_tokens)
    eval_sets = {}
    if recipe.train.eval_steps:
        # Held-out text packed like training text, so the periodic loss is comparable to the train loss.
        for name, texts in (("domain", prepared.heldout_domain), ("general", prepared.heldout_general)):
            packed = pack_documents([Document(t, name) for t in texts], loaded.tokenizer, recipe.model.max_seq_len_tokens)
            if len(packed.dataset):
                eval_sets[name] = packed.dataset
    logger = MultiLogger([JsonlLogger(out / "metrics.jsonl", append=bool(resume)), LivePlot(png_path=out / "loss.png")])
    try:
        return train(loaded, prepared.packed.dataset, recipe.train, eval_datasets=eval_sets, logger=logger, resume=resume)
    finally:
        logger.close()
