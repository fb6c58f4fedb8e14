"""Held-out loss, perplexity and bits per byte, with a sliding window for long documents.

Each document is scored as a continuation of the EOS token (the document
boundary the model saw in pretraining), so every one of its tokens is predicted
and the byte count is the document's whole UTF-8 length. Bits per byte
(total negative log-likelihood in bits / bytes) does not depend on the
tokenizer, so it compares models with different vocabularies and is the number
to quote for "how well does the model know this language".

A model that cuts its inputs (Unsloth's, loaded for shorter training blocks)
takes each window whole while it is scored (:func:`cptnb.models.loading.inputs_up_to`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable

from tqdm.auto import tqdm

from cptnb.models.loading import input_device, inputs_up_to


@dataclass
class HeldoutScore:
    """Scores over a set of documents; ``loss`` is mean nats per predicted token."""

    loss: float
    perplexity: float
    bits_per_byte: float
    tokens: int
    bytes: int
    docs: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def windows(num_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first_scored) spans over a sequence whose position 0 is context only.

    Every position 1..num_tokens-1 is scored exactly once; after the first window
    each scored token sees at least ``window - stride`` tokens of context.
    """
    spans, start, prev_end = [], 0, 1
    while prev_end < num_tokens:
        end = min(start + window, num_tokens)
        spans.append((start, end, prev_end))
        prev_end = end
        # A window's first position is context only, so the next window must begin before prev_end.
        start = min(start + stride, prev_end - 1)
    return spans


def score_texts(
    model,
    tokenizer,
    texts: Iterable[str],
    window_tokens: int = 1024,
    stride_tokens: int = 512,
    batch_size: int = 8,
    desc: str = "scoring",
    progress: bool = True,
) -> HeldoutScore:
    """Loss, perplexity and bits per byte of ``model`` on ``texts``.

    ``progress=False`` shows no bar (a caller scoring documents one at a time shows its own).

    Example::

        score = score_texts(model, tokenizer, ["Xin chào các bạn."])
        score.bits_per_byte
    """
    import torch

    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("score_texts needs at least one non-empty text")
    context = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    pieces: list[tuple[list[int], int]] = []  # (input ids of a window, index of its first scored position)
    n_bytes = 0
    for text in texts:
        ids = [context] + tokenizer(text, add_special_tokens=False)["input_ids"]
        n_bytes += len(text.encode("utf-8"))
        for start, end, first in windows(len(ids), window_tokens, stride_tokens):
            pieces.append((ids[start:end], first - start))
    pieces.sort(key=lambda p: len(p[0]))  # similar lengths together: less padding

    device = input_device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else context
    total_nll, total_tokens = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.inference_mode(), inputs_up_to(model, max(len(ids) for ids, _ in pieces)):
        for i in tqdm(range(0, len(pieces), batch_size), desc=desc, leave=False, disable=not progress):
            batch = pieces[i : i + batch_size]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            for row, (ids, first) in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention[row, : len(ids)] = 1
                labels[row, first : len(ids)] = torch.tensor(ids[first:])
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
            targets = labels[:, 1:].to(device)  # position t predicts token t+1
            for row in range(len(batch)):  # one row at a time: a float32 log-softmax of every row would not fit
                mask = targets[row] != -100
                logprobs = torch.log_softmax(logits[row, :-1][mask].float(), dim=-1)
                total_nll -= float(logprobs.gather(-1, targets[row][mask].unsqueeze(-1)).sum())
                total_tokens += int(mask.sum())
    model.train(was_training)
    loss = total_nll / total_tokens
    return HeldoutScore(
        loss=loss,
        perplexity=math.exp(loss),
        bits_per_byte=total_nll / math.log(2) / n_bytes,
        tokens=total_tokens,
        bytes=n_bytes,
        docs=len(texts),
    )
