"""Tokenize documents in batches and pack them into fixed-length training blocks.

Documents are joined with the tokenizer's EOS token and the token stream is cut
into blocks of ``block_size`` tokens. Long documents are split across blocks,
never truncated. The tail shorter than one block is reported as
``remainder_tokens``, so ``tokens_in == tokens_packed + remainder_tokens``
always holds and nothing disappears unnoticed.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cptnb.data.documents import Document
from cptnb.data.mix import encoded


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


class _Packer:
    """Turns a document stream into blocks, keeping the token accounting."""

    def __init__(self, tokenizer, block_size: int, batch_docs: int, count_text: bool = True):
        if block_size < 2:
            raise ValueError(f"block_size must be >= 2, got {block_size}")
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token; set one so documents can be separated")
        self.tokenizer, self.block_size, self.batch_docs = tokenizer, block_size, batch_docs
        self.count_text = count_text
        self.buffer: list[int] = []
        self.stats = dict(num_docs=0, tokens_in=0, words=0, bytes=0)

    def blocks(self, docs: Iterable[Document]) -> Iterator[list[int]]:
        eos, stats = self.tokenizer.eos_token_id, self.stats
        for doc, ids in encoded(docs, self.tokenizer, self.batch_docs):
            stats["num_docs"] += 1
            if self.count_text:
                stats["words"] += len(doc.text.split())
                stats["bytes"] += len(doc.text.encode("utf-8"))
            self.buffer.extend(ids)
            self.buffer.append(eos)
            stats["tokens_in"] += len(ids) + 1
            while len(self.buffer) >= self.block_size:
                yield self.buffer[: self.block_size]
                del self.buffer[: self.block_size]

    def result(self, dataset) -> PackedCorpus:
        return PackedCorpus(
            dataset=dataset,
            block_size=self.block_size,
            tokens_packed=len(dataset) * self.block_size,
            remainder_tokens=len(self.buffer),
            **self.stats,
        )


def pack_documents(
    docs: Iterable[Document],
    tokenizer,
    block_size: int,
    batch_docs: int = 256,
    out_dir: str | Path | None = None,
    count_text: bool = True,
) -> PackedCorpus:
    """Pack ``docs`` into ``block_size``-token blocks (see module docstring).

    With ``out_dir`` the blocks stream to disk as they are made and the dataset
    is saved there (memory stays bounded for corpora larger than RAM); without
    it they are kept in memory as int32, which suits notebook-sized corpora.
    ``count_text=False`` skips counting words and bytes (left 0) for a caller that
    already has them, as ``prepare`` has from the replay mix; set them on the result.

    Example::

        packed = pack_documents(read_documents(["data_samples/vi"]), tokenizer, 256)
        packed.dataset[0]["input_ids"]  # 256 token ids
    """
    import numpy as np
    from datasets import Dataset, Features, Sequence, Value, load_from_disk

    packer = _Packer(tokenizer, block_size, batch_docs, count_text)
    features = Features({"input_ids": Sequence(Value("int32"))})
    if out_dir is None:
        rows = [np.asarray(b, dtype=np.int32) for b in packer.blocks(docs)]
        return packer.result(Dataset.from_dict({"input_ids": rows}, features=features))

    import pyarrow as pa

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="pack-", dir=out.parent))
    try:
        # Stream blocks into an Arrow file a thousand at a time, then let datasets map it and save it.
        schema = pa.schema([("input_ids", pa.list_(pa.int32()))])
        with pa.OSFile(str(tmp / "blocks.arrow"), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            chunk: list[list[int]] = []
            for block in packer.blocks(docs):
                chunk.append(block)
                if len(chunk) == 1000:
                    writer.write_batch(pa.record_batch([pa.array(chunk, pa.list_(pa.int32()))], schema=schema))
                    chunk = []
            if chunk:
                writer.write_batch(pa.record_batch([pa.array(chunk, pa.list_(pa.int32()))], schema=schema))
        blocks = Dataset.from_file(str(tmp / "blocks.arrow")).cast(features)
        # An empty dataset would be saved as zero shards, which load_from_disk cannot read back: keep one.
        blocks.save_to_disk(str(out), num_shards=1 if len(blocks) == 0 else None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return packer.result(load_from_disk(str(out)))
