"""Tokenize documents in batches and pack them into fixed-length training blocks.

Documents are joined with the tokenizer's EOS token and the token stream is cut
into blocks of ``block_size`` tokens. Long documents are split across blocks,
never truncated. The tail shorter than one block is reported as
``remainder_tokens``, so ``tokens_in == tokens_packed + remainder_tokens``
always holds and nothing disappears unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from cptnb.data.documents import Document


@dataclass
class PackedCorpus:
    """Packed blocks plus the accounting a user needs to trust them."""

    dataset: Any  # datasets.Dataset with an ``input_ids`` column of block_size-long lists
    block_size: int
    num_docs: int
    tokens_in: int  # document tokens + one EOS per document
    tokens_packed: int
    remainder_tokens: int
    words: int
    bytes: int

    @property
    def num_blocks(self) -> int:
        return len(self.dataset)

    @property
    def tokens_per_word(self) -> float:
        """Tokenizer fertility: how many tokens a word costs (EOS excluded)."""
        return (self.tokens_in - self.num_docs) / max(self.words, 1)

    @property
    def tokens_per_byte(self) -> float:
        return (self.tokens_in - self.num_docs) / max(self.bytes, 1)

    def summary(self) -> dict[str, float | int]:
        return {
            "docs": self.num_docs,
            "blocks": self.num_blocks,
            "block_size": self.block_size,
            "tokens_in": self.tokens_in,
            "tokens_packed": self.tokens_packed,
            "remainder_tokens": self.remainder_tokens,
            "tokens_per_word": round(self.tokens_per_word, 4),
            "tokens_per_byte": round(self.tokens_per_byte, 4),
        }


def pack_documents(
    docs: Iterable[Document], tokenizer, block_size: int, batch_docs: int = 256
) -> PackedCorpus:
    """Pack ``docs`` into ``block_size``-token blocks (see module docstring).

    Example::

        packed = pack_documents(read_documents(["data_samples/vi"]), tokenizer, 256)
        packed.dataset[0]["input_ids"]  # 256 token ids
    """
    from datasets import Dataset

    if block_size < 2:
        raise ValueError(f"block_size must be >= 2, got {block_size}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token; set one so documents can be separated")

    blocks: list[list[int]] = []
    buffer: list[int] = []
    stats = dict(num_docs=0, tokens_in=0, words=0, bytes=0)

    def flush_batch(texts: list[str]) -> None:
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        for ids in encoded:
            buffer.extend(ids)
            buffer.append(eos)
            stats["tokens_in"] += len(ids) + 1
        while len(buffer) >= block_size:
            blocks.append(buffer[:block_size])
            del buffer[:block_size]

    batch: list[str] = []
    for doc in docs:
        batch.append(doc.text)
        stats["num_docs"] += 1
        stats["words"] += len(doc.text.split())
        stats["bytes"] += len(doc.text.encode("utf-8"))
        if len(batch) == batch_docs:
            flush_batch(batch)
            batch = []
    if batch:
        flush_batch(batch)

    dataset = Dataset.from_dict({"input_ids": blocks}) if blocks else Dataset.from_dict({"input_ids": []})
    packed = len(blocks) * block_size
    return PackedCorpus(
        dataset=dataset,
        block_size=block_size,
        tokens_packed=packed,
        remainder_tokens=len(buffer),
        **stats,
    )
