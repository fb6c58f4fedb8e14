"""One corpus through the scaled path: shards on a datatrove executor, then the in-order merge in this process.

:class:`ScaledStream` has the interface of :class:`~cptnb.data.pipeline.CorpusStream`
(``documents()``, ``report()``, ``taps``, ``drops``, ``dedup_stats``, ``files_read``,
``stage_seconds``), so ``prepare()`` runs the held-out split, replay mix and packing over
it unchanged.

Why the merge is in order and in one process: a document is a near duplicate of an
earlier *kept* document, so whether it is kept depends on every decision before it.
What is expensive about dedup (normalizing, hashing words, MinHash signing) is done
by the tasks; the merge only looks keys up in the index of kept documents, over the
same batches as in process, so the decisions are the same ones. Its memory is that
index, 268 bytes per kept document with the defaults (see :mod:`cptnb.data.dedup`).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cptnb.data.dedup import Deduplicator, DedupStats, DocKeys
from cptnb.data.documents import Document, DropCounter
from cptnb.data.report import Tap, source_report
from cptnb.data.scale.config import ScaleConfig
from cptnb.data.scale.plan import WorkUnit, fingerprint, plan_units
from cptnb.data.sources import expand_paths, file_manifest
from cptnb.errors import DataError

log = logging.getLogger(__name__)


class ScaledStream:
    """One corpus (domain or general): :meth:`run_shards` on the executor, then :meth:`documents` merges in order.

    Example::

        stream = ScaledStream(cfg, cfg.sources, "vi", None, Path("runs/corpus/scale/domain"), cfg.scale)
        stream.run_shards()
        kept = list(stream.documents())
    """

    def __init__(self, cfg, sources: list, language: str, index, work_dir: Path, scale: ScaleConfig):
        from cptnb.data.parallel import document_stages

        self.cfg, self.sources, self.language, self.index, self.scale = cfg, sources, language, index, scale
        self.work_dir = Path(work_dir).resolve()
        self.stages = document_stages(cfg, language)
        self.drops = DropCounter()
        self.taps: list[Tap] = []
        self.dedup_stats = DedupStats()
        self.files_read: list[dict[str, Any]] = []
        self.stage_seconds: dict[str, float] = {}
        # Sources keep the names the user wrote (the report's keys); tasks open them from this folder.
        self.units: list[WorkUnit] = plan_units(list(sources), scale.split_bytes) if sources else []
        self.tasks = scale.tasks or max(1, len(self.units))

    # -- phase 1: shards

    def pipeline(self) -> list:
        from cptnb.data.scale.steps import DedupKeysAndContamination, KitDocumentStages, ReadUnits, ShardWriter

        cfg = self.cfg
        keyer = Deduplicator(cfg.dedup)
        band_dtype = keyer._near_index.dtype.name
        return [
            ReadUnits(self.units, cfg.text_field, cfg.on_error, cfg.txt_mode, str(Path.cwd())),
            KitDocumentStages(self.stages, cfg.chunk_docs),
            DedupKeysAndContamination(cfg.dedup, self.index, cfg.dedup.batch_docs),
            ShardWriter(str(self.work_dir), len(self.units), keyer.lsh.bands, band_dtype),
        ]

    def _settings(self) -> dict[str, Any]:
        data = self.cfg.to_dict()
        for name in ("scale", "num_proc", "chunk_docs", "sources", "replay_sources", "heldout_domain",
                     "heldout_general", "replay_share", "heldout_share", "block_tokens", "seed"):
            data.pop(name, None)
        return {"data": data, "language": self.language, "tasks": self.tasks,
                "index": [] if self.index is None else self.index.files}

    def run_shards(self) -> None:
        """Run this corpus's tasks on the executor; tasks completed by an earlier run of the same plan are skipped."""
        if not self.units:
            return
        from cptnb.data import langid
        from cptnb.data.scale.executors import build_executor, run_executor

        stamp = fingerprint(self.units, self._settings())
        plan_file = self.work_dir / "plan.json"
        if plan_file.is_file() and json.loads(plan_file.read_text()).get("fingerprint") != stamp:
            log.warning("%s holds shards of other inputs or settings: starting it afresh", self.work_dir)
            shutil.rmtree(self.work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        plan_file.write_text(json.dumps({"fingerprint": stamp, "tasks": self.tasks, "units": len(self.units)}))
        if self.stages.langid is not None and self.scale.executor == "local":
            langid.preload()  # before the fork, so that every local task shares it
        executor = build_executor(self.pipeline(), self.scale, self.tasks, self.work_dir / "datatrove")
        run_executor(executor, self.scale)

    # -- phase 2: accounting from datatrove's statistics, then the in-order merge

    def _read_stats(self) -> list[dict[str, float]]:
        """Per pipeline step, every statistic summed over all tasks (from ``stats/<rank>.json``)."""
        from datatrove.utils.stats import PipelineStats

        total = PipelineStats()
        for rank in range(self.tasks):
            path = self.work_dir / "datatrove" / "stats" / f"{rank:05d}.json"
            total += PipelineStats.from_json(json.loads(path.read_text()))
        return [{key: stat.total for key, stat in step.stats.items()} for step in total.stats]

    def _load_accounting(self) -> None:
        read, *per_document = [Tap("read"), *(Tap(name) for name in self.stages.names)]
        by_name = {tap.name: tap for tap in per_document}
        for step in self._read_stats():
            for key, value in step.items():
                kind, _, rest = key.partition("|")
                if kind in ("in_docs", "in_chars"):
                    getattr(read, kind[3:])[rest] += int(value)
                elif kind in ("pass_docs", "pass_chars"):
                    stage, _, source = rest.partition("|")
                    getattr(by_name[stage], kind[5:])[source] += int(value)
                elif kind in ("drop_docs", "drop_chars"):
                    reason, _, source = rest.partition("|")
                    getattr(self.drops, kind[5:])[(source, reason)] += int(value)
                elif kind == "seconds":
                    self.stage_seconds[rest] = self.stage_seconds.get(rest, 0.0) + float(value)
        self.taps = [read, *per_document]
        self.files_read = file_manifest(expand_paths(self.sources))

    def _records(self) -> Iterator[tuple[Document, list[str], DocKeys, int]]:
        """(document, task files it matched, its unit's keys, its row there), in input order."""
        from cptnb.data.scale.steps import shard_paths

        for unit in range(len(self.units)):
            docs_path, keys_path = shard_paths(self.work_dir, unit)
            if not docs_path.is_file():
                raise DataError(f"{docs_path}: shard missing although its task completed; delete {self.work_dir} "
                                "and run again")
            with np.load(keys_path) as npz:
                keys = DocKeys(npz["exact"], npz["words"], npz["bands"])
            row = -1
            with open(docs_path, encoding="utf-8") as fh:
                for row, line in enumerate(fh):
                    r = json.loads(line)
                    yield Document(r["text"], r["source"], r["id"], r["meta"]), r["contaminated"], keys, row
            if row + 1 != len(keys):
                raise DataError(f"{docs_path}: {row + 1} documents but {len(keys)} dedup keys; delete {self.work_dir} "
                                "and run again")

    def _batches(self, size: int) -> Iterator[tuple[list[Document], list[list[str]], DocKeys]]:
        """The merged stream cut into batches of ``size`` (as the in-process dedup cuts it), keys stacked."""
        docs: list[Document] = []
        flags: list[list[str]] = []
        parts: list[tuple[DocKeys, int, int]] = []  # (unit keys, first row, end row) runs within the batch

        def flush():
            keys = DocKeys.concat([k.rows(a, b) for k, a, b in parts])
            return docs, flags, keys

        for doc, matched, keys, row in self._records():
            if parts and parts[-1][0] is keys and parts[-1][2] == row:
                parts[-1] = (keys, parts[-1][1], row + 1)
            else:
                parts.append((keys, row, row + 1))
            docs.append(doc)
            flags.append(matched)
            if len(docs) == size:
                yield flush()
                docs, flags, parts = [], [], []
        if docs:
            yield flush()

    def documents(self) -> Iterator[Document]:
        """The survivors of every stage, in input order: what ``CorpusStream.documents`` yields for the same input."""
        self._load_accounting()
        cfg = self.cfg
        dedup = Deduplicator(cfg.dedup, self.drops, self.dedup_stats) if cfg.dedup.exact or cfg.dedup.near else None
        dedup_tap = Tap("dedup") if dedup is not None else None
        decontam_tap = Tap("decontam") if self.index is not None else None
        self.taps += [tap for tap in (dedup_tap, decontam_tap) if tap is not None]
        for docs, flags, keys in self._batches(cfg.dedup.batch_docs):
            matched_of = {id(doc): matched for doc, matched in zip(docs, flags)}
            kept = dedup.decide(docs, keys) if dedup is not None else docs
            for doc in kept:
                if dedup_tap is not None:
                    dedup_tap.docs[doc.source] += 1
                    dedup_tap.chars[doc.source] += len(doc.text)
                if self.index is not None:
                    matched = matched_of[id(doc)]
                    if matched:
                        self.index.hits.update(matched)
                        self.drops.drop(doc.source, "contaminated", len(doc.text))
                        continue
                    decontam_tap.docs[doc.source] += 1
                    decontam_tap.chars[doc.source] += len(doc.text)
                yield doc

    def report(self) -> dict[str, dict[str, Any]]:
        return source_report(self.taps[0], self.taps[-1], self.drops) if self.taps else {}
