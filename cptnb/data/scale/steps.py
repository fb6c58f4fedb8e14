"""datatrove pipeline steps built from the kit's own stage code (this module imports datatrove).

Each step wraps the function the in-process path calls, so there is one
implementation of every rule: :func:`~cptnb.data.sources.read_documents` /
:func:`~cptnb.data.sources.read_range` for reading,
:meth:`~cptnb.data.parallel.DocumentStages.run` for clean, language id and quality,
:meth:`~cptnb.data.decontam.ContaminationIndex.matches_many` for the contamination
screen and :meth:`~cptnb.data.dedup.Deduplicator.document_keys` for the dedup keys.

Accounting goes into datatrove's per-step statistics (``stats/<rank>.json``), keyed by
source file: ``in_docs|<source>``, ``pass_docs|<stage>|<source>``,
``drop_docs|<reason>|<source>`` (and ``_chars``), from which :mod:`.merge` rebuilds the report.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from datatrove.data import Document as TroveDocument
from datatrove.pipeline.base import PipelineStep

from cptnb.data.dedup import DedupConfig, Deduplicator
from cptnb.data.documents import Document, DropCounter
from cptnb.data.parallel import DocumentStages
from cptnb.data.scale.plan import WorkUnit
from cptnb.data.sources import read_documents, read_range


def to_trove(doc: Document, unit: int) -> TroveDocument:
    return TroveDocument(text=doc.text, id=doc.id, metadata={"source": doc.source, "meta": doc.meta, "unit": unit})


def to_kit(doc: TroveDocument) -> Document:
    return Document(text=doc.text, source=doc.metadata["source"], id=doc.id, meta=doc.metadata.get("meta", {}))


def unit_chunks(data, size: int) -> Iterator[tuple[int, list[TroveDocument]]]:
    """(unit, up to ``size`` consecutive documents of that unit): a chunk never mixes two units."""
    chunk: list[TroveDocument] = []
    unit = -1
    for doc in data or ():
        if chunk and (doc.metadata["unit"] != unit or len(chunk) >= size):
            yield unit, chunk
            chunk = []
        unit = doc.metadata["unit"]
        chunk.append(doc)
    if chunk:
        yield unit, chunk


class _KitStep(PipelineStep):
    def count_drops(self, drops: DropCounter) -> None:
        for (source, reason), n in drops.docs.items():
            self.stat_update(f"drop_docs|{reason}|{source}", value=n)
            self.stat_update(f"drop_chars|{reason}|{source}", value=drops.chars[(source, reason)])


class ReadUnits(_KitStep):
    """Reads the work units ``rank, rank + world_size, ...`` with the kit's reader."""

    name = "cptnb read"
    type = "📖 - READER"

    def __init__(self, units: list[WorkUnit], text_field: str, on_error: str, txt_mode: str, cwd: str):
        super().__init__()
        self.units, self.text_field, self.on_error, self.txt_mode = units, text_field, on_error, txt_mode
        self.cwd = cwd  # relative source paths are read from the folder prepare() ran in, as in process

    def _read(self, unit: WorkUnit, drops: DropCounter) -> Iterator[Document]:
        if unit.whole:
            return read_documents([unit.path], self.text_field, self.on_error, drops, self.txt_mode)
        return read_range(unit.path, unit.start, unit.length, unit.first_line, self.text_field, self.on_error, drops)

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if Path(self.cwd).is_dir():
            os.chdir(self.cwd)
        for u in range(rank, len(self.units), world_size):
            drops = DropCounter()
            for doc in self._read(self.units[u], drops):
                self.stat_update(f"in_docs|{doc.source}")
                self.stat_update(f"in_chars|{doc.source}", value=len(doc.text))
                yield to_trove(doc, u)
            self.count_drops(drops)


class KitDocumentStages(_KitStep):
    """Clean, language id and quality filters: :meth:`DocumentStages.run` over chunks of one unit."""

    name = "cptnb clean + language + quality"
    type = "🔻 - FILTER"

    def __init__(self, stages: DocumentStages, chunk_docs: int):
        super().__init__()
        self.stages, self.chunk_docs = stages, chunk_docs

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        for unit, chunk in unit_chunks(data, self.chunk_docs):
            result = self.stages.run([to_kit(d) for d in chunk])
            for tap in result.taps:
                for source, n in tap.docs.items():
                    self.stat_update(f"pass_docs|{tap.name}|{source}", value=n)
                    self.stat_update(f"pass_chars|{tap.name}|{source}", value=tap.chars[source])
            for stage, seconds in result.seconds.items():
                self.stat_update(f"seconds|{stage}", value=seconds)
            self.count_drops(result.drops)
            for doc in result.docs:
                yield to_trove(doc, unit)


class DedupKeysAndContamination(_KitStep):
    """Per document: the dedup keys (computed here, decided later in order) and the task files it shares n-grams with."""

    name = "cptnb dedup keys + contamination screen"
    type = "🫂 - DEDUP"

    def __init__(self, dedup: DedupConfig, index, batch_docs: int):
        super().__init__()
        self.dedup, self.index, self.batch_docs = dedup, index, batch_docs

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        keyer = Deduplicator(self.dedup)  # built here: the MinHash backend object need not be picklable
        for _, chunk in unit_chunks(data, self.batch_docs):
            texts = [d.text for d in chunk]
            start = time.perf_counter()
            keys = keyer.document_keys(texts)
            middle = time.perf_counter()
            matched = self.index.matches_many(texts) if self.index is not None else [[] for _ in texts]
            self.stat_update("seconds|dedup_keys", value=middle - start)
            self.stat_update("seconds|decontam_screen", value=time.perf_counter() - middle)
            for i, doc in enumerate(chunk):
                doc.metadata["keys"] = (int(keys.exact[i]), bool(keys.words[i]), keys.bands[i])
                doc.metadata["contaminated"] = matched[i]
                self.stat_update("contaminated", value=int(bool(matched[i])))
                yield doc


def shard_paths(work_dir: Path, unit: int) -> tuple[Path, Path]:
    """The documents (.jsonl) and dedup keys (.npz) of one work unit."""
    return work_dir / "shards" / f"{unit:06d}.jsonl", work_dir / "shards" / f"{unit:06d}.npz"


class ShardWriter(_KitStep):
    """Writes each unit's survivors and keys to its shard (atomically: a rerun never sees half a shard)."""

    name = "cptnb shard writer"
    type = "💽 - WRITER"

    def __init__(self, work_dir: str, units: int, bands: int, band_dtype: str):
        super().__init__()
        self.work_dir, self.units, self.bands, self.band_dtype = Path(work_dir), units, bands, band_dtype

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        (self.work_dir / "shards").mkdir(parents=True, exist_ok=True)
        open_unit, fh, rows = -1, None, []
        try:
            for doc in data or ():
                unit = doc.metadata["unit"]
                if unit != open_unit:
                    self._close(open_unit, fh, rows)
                    open_unit, fh, rows = unit, open(self._tmp(unit, 0), "w", encoding="utf-8"), []
                record = {"id": doc.id, "source": doc.metadata["source"], "text": doc.text,
                          "meta": doc.metadata["meta"], "contaminated": doc.metadata["contaminated"]}
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                rows.append(doc.metadata["keys"])
                self.stat_update("docs_written")
                yield doc
            self._close(open_unit, fh, rows)
            fh = None
        finally:
            if fh is not None:
                fh.close()
        for unit in range(rank, self.units, world_size):  # units that kept nothing still get (empty) shards
            docs, _ = shard_paths(self.work_dir, unit)
            if not docs.exists():
                self._close(unit, open(self._tmp(unit, 0), "w", encoding="utf-8"), [])

    def _tmp(self, unit: int, which: int) -> Path:
        return shard_paths(self.work_dir, unit)[which].with_suffix(f".tmp{os.getpid()}{'.npz' if which else ''}")

    def _close(self, unit: int, fh, rows: list) -> None:
        if fh is None:
            return
        fh.close()
        exact = np.array([r[0] for r in rows], dtype=np.uint64)
        words = np.array([r[1] for r in rows], dtype=bool)
        bands = np.stack([r[2] for r in rows]) if rows else np.zeros((0, self.bands), dtype=self.band_dtype)
        np.savez(self._tmp(unit, 1), exact=exact, words=words, bands=bands)
        docs, keys = shard_paths(self.work_dir, unit)
        os.replace(self._tmp(unit, 1), keys)
        os.replace(self._tmp(unit, 0), docs)  # last: a shard with documents always has its keys
