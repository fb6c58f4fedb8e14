"""Training on document-packed blocks: each document attends only to itself inside its block.

``pack_documents(..., packing="document")`` (``data.packing: document``) stores, beside each block's
``input_ids``, the ``seq_lengths`` of the document pieces that fill it; TRL's packing writes the same
column. Here those lengths become position ids that restart at 0 on every piece, and transformers'
attention keeps the pieces apart from the position ids alone (nothing is written by hand):

- SDPA and eager (the CPU, and GPUs without FlashAttention): with position ids and no attention mask,
  ``transformers.masking_utils.find_packed_sequence_indices`` finds where positions restart and the
  causal mask becomes block-diagonal. Rows stay rows ``[batch, block]`` (:class:`DocumentRowsCollator`),
  so the attention costs what it costs in ``concat`` mode.
- FlashAttention (``attn_implementation`` a flash variant) and Unsloth: their varlen kernels need the
  batch flattened into one row; TRL's own padding-free collator does that
  (``SFTConfig(padding_free=True)``), and Unsloth reads the boundaries from the position ids (or the
  lengths it adds to the batch) and runs its packed attention.

Either way the first token of each piece is no prediction target: it has no earlier token of its own
document to be predicted from (TRL masks the same positions). Every token is still in a block and
still the context of the tokens after it, so a document's loss inside a pack equals its loss scored
alone (checked in ``tests/unit/test_packing_document.py``).
"""

from __future__ import annotations

from typing import Any

SEQ_LENGTHS = "seq_lengths"  # the column name TRL's packing uses for the same thing


def is_document_packed(dataset) -> bool:
    """Whether ``dataset`` carries document boundaries (``seq_lengths``): packed with ``packing="document"``."""
    return dataset is not None and SEQ_LENGTHS in (getattr(dataset, "column_names", None) or [])


def needs_flat_batches(model, backend: str) -> bool:
    """True where packed attention needs one flattened row: FlashAttention variants and Unsloth's forward."""
    from trl.trainer.sft_trainer import FLASH_ATTENTION_VARIANTS

    if backend == "unsloth":
        return True
    config = getattr(model, "config", None)
    implementation = str(getattr(config, "_attn_implementation", "") or "").split("@")[0].split(":")[0]
    return implementation in FLASH_ATTENTION_VARIANTS


def _rows_collator_class():
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    class DocumentRowsCollator(DataCollatorForLanguageModeling):
        """TRL's collator with position ids restarting at each document piece, rows kept, no attention mask.

        transformers builds the per-document (block-diagonal causal) mask from the position ids only
        when no attention mask and no key/value cache are given (``masking_utils._preprocess_mask_arguments``);
        packed blocks are never padded, so the all-ones mask says nothing, and training needs no cache.
        """

        def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            batch = super().torch_call(examples)
            mask = batch.get("attention_mask")
            if mask is not None and bool(mask.all()):
                del batch["attention_mask"]
                # A piece's first token would be predicted from the previous piece's last token: not a target.
                batch["labels"][batch["position_ids"] == 0] = -100
                # A key/value cache (config.use_cache) also turns the detection off: the mask would be plain causal.
                batch["use_cache"] = False
            return batch

    return DocumentRowsCollator


def document_collator(pad_token_id: int):
    """The collator for SDPA / eager attention: ``[batch, block]`` rows with restarting position ids.

    Example::

        batch = document_collator(tokenizer.pad_token_id)([packed.dataset[0], packed.dataset[1]])
        model(**batch).loss  # each document attends only to itself
    """
    return _rows_collator_class()(pad_token_id=pad_token_id, return_position_ids=True)


def flat_collator(pad_token_id: int):
    """TRL's padding-free collator (what ``SFTConfig(padding_free=True)`` builds): one row, restarting positions."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(pad_token_id=pad_token_id, padding_free=True)


def trainer_arguments(loaded, train_dataset) -> tuple[bool, Any]:
    """``(padding_free, data collator or None)`` for training ``loaded`` on ``train_dataset`` (what ``train`` uses).

    ``concat`` blocks: ``(False, None)``, TRL's defaults. ``document`` blocks on FlashAttention or Unsloth:
    TRL's padding-free mode, ``(True, None)`` (TRL builds its collator, which Unsloth wraps with its
    packed-attention metadata; ``max_length`` is then left unset, the blocks being cut already). On SDPA /
    eager: ``(False, document_collator(...))``.
    """
    if not is_document_packed(train_dataset):
        return False, None
    if needs_flat_batches(loaded.model, loaded.backend):
        return True, None
    return False, document_collator(loaded.tokenizer.pad_token_id)


def piece_index(seq_lengths: list[int]):
    """For one block: which document piece each token belongs to, as transformers derives it from the position ids.

    Returns a ``[block]`` tensor (0, 0, 1, 1, 1, 2, ...); two tokens may attend to each other in document
    mode only when they share a value. Used for the notebook's picture of the two attention patterns.
    """
    import torch
    from transformers.masking_utils import find_packed_sequence_indices
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    positions = DataCollatorForLanguageModeling.get_position_ids_from_packed_seq_lengths([list(seq_lengths)])[0]
    found = find_packed_sequence_indices(positions[None, :])
    return torch.zeros_like(positions) if found is None else found[0]
