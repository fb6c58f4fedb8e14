"""Training with new rows: an optional embeddings-only first stage, then LoRA + embeddings, and a check on the new rows.

Chinese-LLaMA's recipe: new embeddings start far from what the network expects,
so a short first stage trains only the embeddings (the new rows, or all rows) at
the embedding learning rate while every other weight is frozen; then the usual
LoRA + embeddings run continues from there. Both stages use the one
:func:`cptnb.train.trainer.train`. :class:`NewRowsCheck` confirms afterwards that
the new rows moved (the whole-tensor check would pass if only old rows did).

Example::

    result = train_with_vocab(loaded, packed.dataset, recipe, eval_datasets=eval_sets, logger=plot)
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

from cptnb.vocab.adapter import read_record
from cptnb.vocab.errors import VocabError
from cptnb.vocab.learn import RECORD_NAME

log = logging.getLogger(__name__)


def embedding_weight(model):
    """The trained input-embedding matrix (PEFT's modules_to_save copy when there is one)."""
    inp = model.get_input_embeddings()
    saved = getattr(inp, "modules_to_save", None)
    if saved is not None and len(saved):
        return next(iter(saved.values())).weight
    return inp.weight


class NewRowsCheck:
    """Snapshot rows ``[first, end)`` of the input embedding; after training, how many of them moved."""

    def __init__(self, model, first: int, end: int):
        self.first, self.end = first, end
        self.before = embedding_weight(model)[first:end].detach().float().cpu().clone()

    def moved_share(self, model) -> float:
        after = embedding_weight(model)[self.first : self.end].detach().float().cpu()
        return float((after != self.before).any(dim=1).float().mean())

    def verify(self, model) -> float:
        share = self.moved_share(model)
        if share == 0.0:
            raise VocabError(
                f"none of the {self.end - self.first} new embedding rows changed during training: the embeddings did "
                "not train. Set model.train_embeddings: true and check train.embedding_learning_rate"
            )
        return share


def _stage_config(train_cfg, steps: int, output_dir: Path):
    lr = train_cfg.effective_embedding_learning_rate
    return train_cfg.replace(
        output_dir=str(output_dir), max_steps=steps, learning_rate=lr, embedding_learning_rate=lr,
        save_steps=0, eval_steps=0, warmup_steps=min(train_cfg.warmup_steps, max(steps // 4, 0)),
        on_regression="warn",  # no eval steps here: the retention threshold is watched in the main stage
    )


def train_embeddings_first(loaded, train_dataset, recipe, steps: int, rows: str = "new", logger=None):
    """Train only the embeddings of ``loaded`` for ``steps`` steps (``rows``: new or all); other weights stay frozen.

    The result is written to ``<train.output_dir>/embedding_stage/`` (its own
    metrics and adapter); ``loaded`` is changed in place and ready for the second stage.
    """
    from cptnb.models.loading import EMBEDDING_MODULES
    from cptnb.train.monitor import JsonlLogger
    from cptnb.train.trainer import train

    record = (read_record(loaded.source) or {}).get("resize")
    if rows == "new" and record is None:
        raise VocabError(f"{loaded.source} has no {RECORD_NAME}: with embedding_stage_rows 'new' extend the vocabulary first")
    model = loaded.model
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    embedding_names = [n for n, _ in trainable if any(m in n for m in EMBEDDING_MODULES)]
    if not embedding_names:
        raise VocabError("no embedding matrix is trainable: set model.train_embeddings: true for the embeddings stage")
    hook = None
    if rows == "new":
        import torch

        weight = embedding_weight(model)
        mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
        mask[record["first_new_id"] : record["tokenizer_size"]] = 1
        hook = weight.register_hook(lambda grad: grad * mask)  # old and padding rows get no gradient
    for name, p in trainable:
        if name not in embedding_names:
            p.requires_grad_(False)
    out = Path(recipe.train.output_dir) / "embedding_stage"
    cfg = _stage_config(recipe.train, steps, out)
    logger = logger if logger is not None else JsonlLogger(out / "metrics.jsonl")
    try:
        result = train(dataclasses.replace(loaded, trainable_names=embedding_names), train_dataset, cfg, logger=logger)
    finally:
        if hook is not None:
            hook.remove()
        for _, p in trainable:
            p.requires_grad_(True)
    return result


def train_with_vocab(loaded, train_dataset, recipe, eval_datasets=None, logger=None, resume: bool | str = False,
                     watch=None):
    """:func:`~cptnb.train.trainer.train` with ``recipe.model.vocab``'s first stage and the new-rows check.

    A resumed run skips the first stage (its result is in the checkpoint). The
    extension record is copied into the final adapter/model folder, so loading it
    on the original base works (:func:`cptnb.vocab.extend.fit_base_to_adapter`)
    and the model card can describe the extension.
    """
    from cptnb.train.trainer import train

    vocab = recipe.model.vocab
    record = read_record(loaded.source)
    resize = (record or {}).get("resize")
    check = NewRowsCheck(loaded.model, resize["first_new_id"], resize["tokenizer_size"]) if resize else None
    stage_result = None
    if vocab.embedding_stage_steps and not resume:
        stage_result = train_embeddings_first(loaded, train_dataset, recipe, vocab.embedding_stage_steps,
                                              vocab.embedding_stage_rows)
    result = train(loaded, train_dataset, recipe.train, eval_datasets=eval_datasets, logger=logger, resume=resume,
                   watch=watch)  # watch: task scores and the retention threshold (cptnb.train.watch)
    if check is not None:
        share = check.verify(loaded.model)
        log.info("%.1f%% of the %d new embedding rows moved", 100 * share, resize["tokenizer_size"] - resize["first_new_id"])
    if record is not None:
        shutil.copy(Path(loaded.source) / RECORD_NAME, Path(result.final_dir) / RECORD_NAME)
    if stage_result is not None:
        log.info("embeddings-only stage: %d steps, final loss %.4f", stage_result.steps, stage_result.final_train_loss)
    return result
