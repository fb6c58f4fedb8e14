"""Replay: mix general-language documents into training at a target share of *tokens*.

Forgetting is limited by replaying general text like the one the model was
pretrained on (seed 002); the usual range is 5-20% of training tokens. The
share is counted in tokens, not documents, because documents differ in length
and languages differ in tokens per word.

Streaming: domain documents are tokenized in batches and, after each one,
replay documents are inserted while the running replay share is below the
target, so replay is spread evenly through training and memory stays bounded.
Replay documents the target does not need are counted as ``replay_surplus``.
Documents come out with ``tokens`` filled in, so packing does not tokenize twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from cptnb.data.documents import Document, DropCounter
from cptnb.data.languages.segment import count_words


@dataclass
class MixStats:
    """Tokens from each side; filled in while the mixed stream is consumed."""

    target_share: float
    domain_tokens: int = 0
    replay_tokens: int = 0
    replay_docs: int = 0
    replay_exhausted: bool = False
    domain_words: int = 0
    domain_bytes: int = 0
    replay_words: int = 0
    replay_bytes: int = 0

    @property
    def achieved_share(self) -> float:
        total = self.domain_tokens + self.replay_tokens
        return self.replay_tokens / total if total else 0.0

    def fertility(self) -> dict[str, dict[str, float]]:
        """Tokens per word and per byte for each side: what the language costs with this tokenizer."""
        out = {}
        for side in ("domain", "replay"):
            tokens, words, n_bytes = (getattr(self, f"{side}_{k}") for k in ("tokens", "words", "bytes"))
            if words:
                out[side] = {"tokens_per_word": round(tokens / words, 4), "tokens_per_byte": round(tokens / n_bytes, 4),
                             "tokens": tokens, "words": words, "bytes": n_bytes}
        return out


def encoded(docs: Iterable[Document], tokenizer, batch: int = 256) -> Iterator[tuple[Document, list[int]]]:
    """``(doc, token ids)`` in order: ``doc.tokens`` where set, else one batched fast-tokenizer call per ``batch``.

    The one tokenization loop of the pipeline: :func:`tokenized` and packing both use it.
    """
    it = iter(docs)
    while chunk := list(islice(it, batch)):
        todo = [d.text for d in chunk if d.tokens is None]
        fresh = iter(tokenizer(todo, add_special_tokens=False)["input_ids"] if todo else ())
        for doc in chunk:
            yield doc, doc.tokens if doc.tokens is not None else next(fresh)


def tokenized(docs: Iterable[Document], tokenizer, batch: int = 256) -> Iterator[Document]:
    """Fill ``doc.tokens`` (no special tokens) using batched, fast tokenization."""
    for doc, ids in encoded(docs, tokenizer, batch):
        doc.tokens = ids
        yield doc


def mix_replay(
    domain: Iterable[Document],
    replay: Iterable[Document],
    share: float,
    tokenizer,
    drops: DropCounter | None = None,
    stats: MixStats | None = None,
) -> Iterator[Document]:
    """Interleave ``replay`` into ``domain`` so replay is ``share`` of the tokens.

    Example::

        stats = MixStats(0.1)
        docs = list(mix_replay(vi_docs, en_docs, 0.1, tokenizer, stats=stats))
        stats.achieved_share  # close to 0.1
    """
    if not 0 <= share < 1:
        raise ValueError(f"replay share must be in [0, 1), got {share}")
    stats = stats if stats is not None else MixStats(share)
    replay_stream = tokenized(replay, tokenizer)
    for doc in tokenized(domain, tokenizer):
        stats.domain_tokens += len(doc.tokens)
        stats.domain_words += count_words(doc.text)  # Thai etc. segmented
        stats.domain_bytes += len(doc.text.encode("utf-8"))
        yield doc
        # replay / (domain + replay) < share  <=>  replay * (1 - share) < share * domain
        while not stats.replay_exhausted and stats.replay_tokens * (1 - share) < share * stats.domain_tokens:
            extra = next(replay_stream, None)
            if extra is None:
                stats.replay_exhausted = True
                break
            stats.replay_tokens += len(extra.tokens)
            stats.replay_words += count_words(extra.text)
            stats.replay_bytes += len(extra.text.encode("utf-8"))
            stats.replay_docs += 1
            yield extra
    for doc in replay_stream:  # what the target did not need, counted
        if drops is not None:
            drops.drop(doc.source, "replay_surplus", len(doc.text))
