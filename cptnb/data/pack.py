"""Tokenize documents in batches and pack them into fixed-length training blocks.

Documents are joined with the tokenizer's EOS token and the token stream is cut
into blocks of ``block_size`` tokens. Long documents are split across blocks,
never truncated. The tail shorter than one block is reported as
``remainder_tokens``, so ``tokens_in == tokens_packed + remainder_tokens``
always holds and nothing disappears unnoticed.

``packing="concat"`` (the default) lets every token attend to everything before
it in its block, the tail of an unrelated document included. ``packing="document"``
keeps the same blocks and adds a ``seq_lengths`` column: the lengths of the
document pieces (a document's ids plus its EOS, or the part of it that falls in
this block) that make up each block, summing to ``block_size``. That is the
column TRL's own packing writes; the trainer turns it into position ids that
restart at each piece, and transformers' attention (SDPA or eager masks built
from the position ids, FlashAttention varlen, Unsloth's packed forward) then
keeps each piece to itself (see :mod:`cptnb.train.document_packing`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cptnb.data.documents import Document
from cptnb.data.languages.segment import count_words
from cptnb.data.mix import encoded

PACKING_MODES = ("concat", "document")


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
    packing: str = "concat"  # "document": the dataset also holds ``seq_lengths`` (document pieces per block)
    pieces: int = 0  # document pieces in the blocks (document mode; one more per split across a block edge)

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
            "packing": self.packing,
            **({"pieces": self.pieces} if self.packing == "document" else {}),
        }


class _Packer:
    """Turns a document stream into blocks, keeping the token accounting."""

    def __init__(self, tokenizer, block_size: int, batch_docs: int, count_text: bool = True, packing: str = "concat"):
        if block_size < 2:
            raise ValueError(f"block_size must be >= 2, got {block_size}")
        if packing not in PACKING_MODES:
            raise ValueError(f"packing must be one of {', '.join(PACKING_MODES)}, got {packing!r}")
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token; set one so documents can be separated")
        self.tokenizer, self.block_size, self.batch_docs = tokenizer, block_size, batch_docs
        self.count_text, self.packing = count_text, packing
        self.buffer: list[int] = []
        self.lengths: list[int] = []  # lengths of the document pieces in the buffer, in order
        self.pieces = 0
        self.stats = dict(num_docs=0, tokens_in=0, words=0, bytes=0)

    def _cut_lengths(self) -> list[int]:
        """The piece lengths of the next block; a document crossing the block edge is split in two pieces."""
        head, total = [], 0
        while total < self.block_size:
            take = min(self.lengths[0], self.block_size - total)
            head.append(take)
            total += take
            if take == self.lengths[0]:
                self.lengths.pop(0)
            else:
                self.lengths[0] -= take
        self.pieces += len(head)
        return head

    def rows(self, docs: Iterable[Document]) -> Iterator[dict[str, list[int]]]:
        """Each block as a dataset row: ``input_ids``, and ``seq_lengths`` in document mode."""
        document = self.packing == "document"
        for block in self.blocks(docs):
            yield {"input_ids": block, "seq_lengths": self._cut_lengths()} if document else {"input_ids": block}

    def blocks(self, docs: Iterable[Document]) -> Iterator[list[int]]:
        eos, stats = self.tokenizer.eos_token_id, self.stats
        for doc, ids in encoded(docs, self.tokenizer, self.batch_docs):
            stats["num_docs"] += 1
            if self.count_text:
                stats["words"] += count_words(doc.text)  # Thai and other space-less scripts segmented
                stats["bytes"] += len(doc.text.encode("utf-8"))
            self.buffer.extend(ids)
            self.buffer.append(eos)
            if self.packing == "document":
                self.lengths.append(len(ids) + 1)
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
            packing=self.packing,
            pieces=self.pieces,
            **self.stats,
        )


def pack_documents(
    docs: Iterable[Document],
    tokenizer,
    block_size: int,
    batch_docs: int = 256,
    out_dir: str | Path | None = None,
    count_text: bool = True,
    packing: str = "concat",
) -> PackedCorpus:
    """Pack ``docs`` into ``block_size``-token blocks (see module docstring).

    With ``out_dir`` the blocks stream to disk as they are made and the dataset
    is saved there (memory stays bounded for corpora larger than RAM); without
    it they are kept in memory as int32, which suits notebook-sized corpora.
    ``count_text=False`` skips counting words and bytes (left 0) for a caller that
    already has them, as ``prepare`` has from the replay mix; set them on the result.
    ``packing="document"`` adds the ``seq_lengths`` column (see module docstring);
    the blocks themselves are the same in both modes.

    Example::

        packed = pack_documents(read_documents(["data_samples/vi"]), tokenizer, 256)
        packed.dataset[0]["input_ids"]  # 256 token ids
    """
    import numpy as np
    from datasets import Dataset, Features, Sequence, Value, load_from_disk

    packer = _Packer(tokenizer, block_size, batch_docs, count_text, packing)
    columns = ["input_ids", "seq_lengths"] if packing == "document" else ["input_ids"]
    features = Features({name: Sequence(Value("int32")) for name in columns})
    if out_dir is None:
        table: dict[str, list] = {name: [] for name in columns}
        for row in packer.rows(docs):
            for name in columns:
                table[name].append(np.asarray(row[name], dtype=np.int32))
        return packer.result(Dataset.from_dict(table, features=features))

    import pyarrow as pa

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="pack-", dir=out.parent))
    try:
        # Stream blocks into an Arrow file a thousand at a time, then let datasets map it and save it.
        schema = pa.schema([(name, pa.list_(pa.int32())) for name in columns])

        def batch(chunk: list[dict[str, list[int]]]):
            return pa.record_batch([pa.array([r[n] for r in chunk], pa.list_(pa.int32())) for n in columns], schema=schema)

        with pa.OSFile(str(tmp / "blocks.arrow"), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            chunk: list[dict[str, list[int]]] = []
            for row in packer.rows(docs):
                chunk.append(row)
                if len(chunk) == 1000:
                    writer.write_batch(batch(chunk))
                    chunk = []
            if chunk:
                writer.write_batch(batch(chunk))
        blocks = Dataset.from_file(str(tmp / "blocks.arrow")).cast(features)
        # An empty dataset would be saved as zero shards, which load_from_disk cannot read back: keep one.
        blocks.save_to_disk(str(out), num_shards=1 if len(blocks) == 0 else None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return packer.result(load_from_disk(str(out)))
