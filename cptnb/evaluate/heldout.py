"""Held-out measurement: loss, perplexity and bits per byte per held-out set, each document's own numbers.

:func:`measure` scores each held-out set (e.g. ``domain`` = Vietnamese,
``general`` = English) and generates for a few prompts; its per-document numbers
let a comparison put an interval on the change (see :mod:`cptnb.evaluate.report`).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from tqdm.auto import tqdm

from cptnb.config import EvalConfig
from cptnb.evaluate.generate import generate
from cptnb.evaluate.perplexity import HeldoutScore, score_texts


def _doc_id(index: int, text: str) -> str:
    # Position plus a content hash: two runs pair documents only if they scored the same texts.
    return f"{index}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:10]}"


def score_documents(model, tokenizer, texts: list[str], cfg: EvalConfig, desc: str = "scoring") -> dict[str, Any]:
    """``HeldoutScore.to_dict()`` of ``texts`` plus ``items``: per document id, nll_nats, tokens, bytes.

    Each document is scored on its own (no batching across documents), which is
    what makes the per-document numbers exact; the totals equal
    :func:`score_texts` on the whole list.
    """
    items = []
    for i, text in enumerate(tqdm(texts, desc=desc, unit="doc", leave=False)):  # one bar per measurement
        if not text:
            continue  # score_texts skips empty texts too
        s = score_texts(
            model, tokenizer, [text], cfg.window_tokens, cfg.stride_tokens, cfg.batch_size, progress=False
        )
        items.append({"id": _doc_id(i, text), "nll_nats": s.loss * s.tokens, "tokens": s.tokens, "bytes": s.bytes})
    if not items:
        raise ValueError("score_documents needs at least one non-empty text")
    nll, tokens, n_bytes = (sum(d[k] for d in items) for k in ("nll_nats", "tokens", "bytes"))
    score = HeldoutScore(nll / tokens, math.exp(nll / tokens), nll / math.log(2) / n_bytes, tokens, n_bytes, len(items))
    return {**score.to_dict(), "items": items}


def measure(
    model, tokenizer, heldout: dict[str, list[str]], cfg: EvalConfig | None = None, per_document: bool = True
) -> dict[str, Any]:
    """Scores per held-out set and generations for ``cfg.prompts``.

    With ``per_document`` (the default) each document is scored alone and kept,
    so :func:`write_before_after` can give bits per byte a confidence interval;
    ``per_document=False`` batches documents together (faster on a GPU with many
    short documents) and the held-out rows get no interval.

    Example::

        before = measure(model, tok, {"domain": vi_texts, "general": en_texts}, EvalConfig(prompts=["Hà Nội là"]))
        before["heldout"]["domain"]["bits_per_byte"]
    """
    cfg = cfg or EvalConfig()
    scores = {}
    for name, texts in heldout.items():
        if per_document:
            scores[name] = score_documents(model, tokenizer, texts, cfg, desc=f"held-out {name}")
        else:
            scores[name] = score_texts(
                model, tokenizer, texts, cfg.window_tokens, cfg.stride_tokens, cfg.batch_size, desc=f"held-out {name}"
            ).to_dict()
    generations = generate(model, tokenizer, cfg.prompts, cfg.max_new_tokens) if cfg.prompts else []
    return {"heldout": scores, "generations": [{"prompt": p, "output": o} for p, o in zip(cfg.prompts, generations)]}


def evenly(texts: list[str], n: int) -> list[str]:
    """``n`` texts spread evenly over the list (all of them if n <= 0 or n >= len)."""
    if n <= 0 or n >= len(texts):
        return list(texts)
    return [texts[i * len(texts) // n] for i in range(n)]
