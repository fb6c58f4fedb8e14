"""Give a model rows for the new tokens: resize (padded to a GPU-friendly multiple) and initialise them.

Three initialisations, for comparison:

- ``mean_of_pieces``: each new row is the mean of the rows of the base tokens the
  old tokenizer cut the new token into, for the input embedding and (when not
  tied) for the output embedding. The model starts out treating ``Ġngười`` much
  like the pieces it used to read, so little is lost before training.
- ``global_mean``: every new row is the mean of all old rows (what Axolotl's
  ``mean_resizing_embeddings`` and transformers' ``mean_resizing`` start from).
- ``random``: normal(0, ``initializer_range``), as a freshly built model.

Rows past the last new token are padding so the matrix has a multiple of
``pad_to_multiple_of`` rows (tensor cores and kernels prefer it): they are zero,
no tokenizer id maps to them, they are listed in ``generation_config.suppress_tokens``
so generation never produces them, and training never gives them a target.

Example::

    record = resize_and_init(model, extension, method="mean_of_pieces", pad_to_multiple_of=64)
"""

from __future__ import annotations

import math
from typing import Any

from cptnb.vocab.errors import VocabError
from cptnb.vocab.learn import VocabExtension

INIT_METHODS = ("mean_of_pieces", "global_mean", "random")


def embeddings_tied(model) -> bool:
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    return out is not None and getattr(out, "weight", None) is getattr(inp, "weight", None)


def check_resizable(model) -> None:
    """Raise :class:`VocabError` when ``model``'s embeddings cannot be resized here, saying what to do instead."""
    import torch

    if hasattr(model, "peft_config"):
        raise VocabError(
            "this model already carries LoRA adapters: resize the base model first (extend_vocabulary, or "
            "resize_and_init on the plain transformers model), then add LoRA with load_model"
        )
    if getattr(model.config, "quantization_config", None) is not None:
        raise VocabError(
            "the model's weights are quantized, and quantized embeddings cannot be resized or initialised: extend "
            "the full-precision base, save it, then load that for QLoRA"
        )
    try:
        inp = model.get_input_embeddings()
    except NotImplementedError:
        inp = None
    if not isinstance(inp, torch.nn.Embedding):
        raise VocabError(
            f"{type(model).__name__} exposes no torch.nn.Embedding through get_input_embeddings(), so its vocabulary "
            "cannot be resized; use a causal LM from transformers (AutoModelForCausalLM)"
        )
    out = model.get_output_embeddings()
    if out is not None and not hasattr(out, "weight"):
        raise VocabError(f"the output layer {type(out).__name__} has no weight matrix to resize")


def padded_rows(needed: int, multiple: int) -> int:
    """``needed`` rounded up to a multiple of ``multiple`` (1 means no padding)."""
    return int(math.ceil(needed / multiple) * multiple)


def resize_and_init(
    model, extension: VocabExtension, method: str = "mean_of_pieces", pad_to_multiple_of: int = 64, seed: int = 0
) -> dict[str, Any]:
    """Resize ``model``'s input and output embeddings for ``extension`` and initialise the new rows in place.

    Returns a record (rows before/after, padding ids, tied or not, method) that
    is also stored in ``model.config.cptnb_vocab`` so a saved model carries it.
    """
    import torch

    if method not in INIT_METHODS:
        raise VocabError(f"init method must be one of {', '.join(INIT_METHODS)}; got {method!r}")
    if not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1:
        raise VocabError(f"pad_to_multiple_of must be an integer >= 1, got {pad_to_multiple_of!r}")
    check_resizable(model)
    rows_before = model.get_input_embeddings().weight.shape[0]
    if rows_before < extension.base_size:
        raise VocabError(
            f"the model has {rows_before} embedding rows but its tokenizer produces {extension.base_size} ids: "
            "the tokenizer does not belong to this model"
        )
    tied = embeddings_tied(model)
    needed = extension.base_size + len(extension.new_tokens)
    rows_after = padded_rows(max(needed, rows_before), pad_to_multiple_of)
    inp_old = model.get_input_embeddings().weight.detach().clone()
    out_layer = model.get_output_embeddings()
    out_old = None if tied or out_layer is None else out_layer.weight.detach().clone()
    model.resize_token_embeddings(rows_after, mean_resizing=False)
    inp = model.get_input_embeddings().weight
    out = None if out_old is None else model.get_output_embeddings().weight
    new = torch.tensor(list(extension.new_ids), dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    std = float(getattr(model.config, "initializer_range", 0.02))
    with torch.no_grad():
        for weight, old in ((inp, inp_old), (out, out_old)):
            if weight is None:
                continue
            weight[new] = _new_rows(old, extension, method, std, generator).to(weight.dtype)
            weight[needed:] = 0  # padding rows: zero, never a target, suppressed in generation
    padding = list(range(needed, rows_after))
    if padding and getattr(model, "generation_config", None) is not None:
        model.generation_config.suppress_tokens = sorted(set(model.generation_config.suppress_tokens or []) | set(padding))
    record = {
        "method": method,
        "new_tokens": len(extension.new_tokens),
        "first_new_id": extension.base_size,
        "tokenizer_size": needed,
        "rows_before": rows_before,
        "rows_after": rows_after,
        "pad_to_multiple_of": pad_to_multiple_of,
        "padding_ids": [needed, rows_after] if padding else [],
        "tied": tied,
    }
    model.config.cptnb_vocab = record
    return record


def _new_rows(old, extension: VocabExtension, method: str, std: float, generator):
    import torch

    known = old[: extension.base_size].float()
    if method == "mean_of_pieces":
        return torch.stack([known[torch.tensor(p)].mean(0) for p in extension.pieces])
    if method == "global_mean":
        return known.mean(0).expand(len(extension.new_tokens), -1).clone()
    return torch.randn((len(extension.new_tokens), old.shape[1]), generator=generator) * std
