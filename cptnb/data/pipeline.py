"""The whole corpus pipeline in one call: ``prepare(cfg, tokenizer, out_dir)``.

sources -> clean -> language id -> quality filters -> dedup -> decontamination
-> held-out split -> replay mix -> tokenize + pack. Every stage streams; a
:class:`~cptnb.data.report.Tap` after each one feeds the funnel, and the
:class:`DropCounter` records why each lost document went, so ``report.json``
satisfies ``docs_in == docs_kept + sum(dropped)`` for every source.

Clean, language id and quality filters run over chunks of ``cfg.chunk_docs``
documents, in ``cfg.num_proc`` worker processes (:mod:`cptnb.data.parallel`); the
output and the report are the same for any number of workers. With
``cfg.scale.executor`` local, slurm or ray the same stages run as datatrove tasks
(:mod:`cptnb.data.scale`), with the same output and report.

Outputs in ``out_dir``: ``train/`` (packed ``datasets`` folder),
``heldout_domain.jsonl``, ``heldout_general.jsonl``, ``report.json`` (with
``source_files``: path, bytes, SHA-256 and role of every input file read),
``funnel.png``, ``fertility.json``.
"""

from __future__ import annotations

import json
import logging
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from cptnb.config import DataConfig
from cptnb.data import decontam, dedup
from cptnb.data.clean import clean_documents
from cptnb.data.dedup import DedupStats
from cptnb.data.documents import Document, DropCounter
from cptnb.data.languages.profile import segmentation_report
from cptnb.data.mix import MixStats, mix_replay
from cptnb.data.pack import PackedCorpus, pack_documents
from cptnb.data.parallel import StagePool, chunked, document_stages, merge_into, worker_count
from cptnb.data.report import (
    Tap,
    check_accounting,
    draw_funnel,
    funnel,
    source_report,
    too_small_message,
    totals,
    write_json,
)
from cptnb.data.sources import file_manifest, read_documents
from cptnb.data.split import split_heldout
from cptnb.errors import CorpusTooSmallError

log = logging.getLogger(__name__)


@dataclass
class PreparedCorpus:
    """What ``prepare`` produced, in memory and on disk."""

    out_dir: Path
    packed: PackedCorpus
    heldout_domain: HeldoutTexts  # list-like, read from heldout_domain.jsonl
    heldout_general: HeldoutTexts
    report: dict[str, Any] = field(default_factory=dict)


class HeldoutTexts(Sequence):
    """The texts of a held-out JSONL file written by ``prepare``, read from disk when asked for.

    A list-like view (``len``, indexing, slicing, iteration) that holds 8 bytes per
    document in memory rather than the texts: held out at 5%, a 20 GB corpus would
    otherwise keep 1 GB of text in memory for as long as the result lives.
    """

    def __init__(self, path: Path, offsets: array):
        self.path, self._offsets = Path(path), offsets

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        offset = self._offsets[i]  # raises IndexError like a list
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            return json.loads(fh.readline())["text"]

    def __iter__(self) -> Iterator[str]:
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)["text"]

    def __eq__(self, other) -> bool:
        return list(self) == list(other) if isinstance(other, (list, HeldoutTexts)) else NotImplemented

    def __repr__(self) -> str:
        return f"HeldoutTexts({str(self.path)!r}, {len(self)} texts)"


class _HeldoutSink:
    """Routes held-out documents to a JSONL file while training documents flow on."""

    def __init__(self, path: Path):
        self.path = path
        self.offsets = array("q")  # byte offset of each line: the texts themselves stay on disk
        self._fh = open(path, "wb")

    @property
    def texts(self) -> HeldoutTexts:
        return HeldoutTexts(self.path, self.offsets)

    def keep(self, doc: Document) -> None:
        self.offsets.append(self._fh.tell())
        line = json.dumps({"id": doc.id, "source": doc.source, "text": doc.text}, ensure_ascii=False) + "\n"
        self._fh.write(line.encode("utf-8"))

    def route(self, pairs: Iterable[tuple[Document, bool]]) -> Iterator[Document]:
        """Keep the held-out documents, pass the others on."""
        for doc, held in pairs:
            if held:
                self.keep(doc)
            else:
                yield doc

    def close(self) -> None:
        self._fh.close()


def _contamination_index(cfg: DataConfig):
    """One index of the evaluation tasks' n-grams, shared by the domain and replay corpora (or None)."""
    if not (cfg.decontam.enabled and cfg.eval_tasks):
        return None
    return decontam.build_contamination_index(cfg.eval_tasks, cfg.decontam.ngram_words, cfg.decontam.short_text_min_words)


class CorpusStream:
    """One corpus (domain or general) through read -> clean -> language -> quality -> dedup -> decontam.

    ``documents()`` streams what survives; afterwards ``report()`` gives the per-source
    accounting, ``taps`` the funnel, ``dedup_stats`` the clusters, ``files_read`` the
    input files with their hashes and ``stage_seconds`` the time of the per-document
    stages (summed over workers). The per-document stages run on ``pool`` (in this
    process when None).

    Example::

        stream = CorpusStream(DataConfig(sources=["data_samples/vi"]), ["data_samples/vi"], "vi")
        kept = list(stream.documents())
        stream.report()["data_samples/vi/news.jsonl"]["dropped"]
    """

    def __init__(self, cfg: DataConfig, sources: list, language: str, index=None, pool: StagePool | None = None):
        self.cfg, self.sources, self.language, self.index = cfg, sources, language, index
        self.pool = pool if pool is not None else StagePool(1)
        self.stages = document_stages(cfg, language)
        self.drops = DropCounter()
        self.taps: list[Tap] = []
        self.dedup_stats = DedupStats()
        self.files_read: list[dict[str, Any]] = []
        self.stage_seconds: dict[str, float] = {}

    def documents(self) -> Iterator[Document]:
        cfg = self.cfg
        read = Tap("read")
        per_document = [Tap(name) for name in self.stages.names]
        self.taps += [read, *per_document]
        docs = read_documents(self.sources, cfg.text_field, cfg.on_error, self.drops, cfg.txt_mode, self.files_read)
        # Every stage down to packing pulls from this stream, so one bar over the documents read shows the whole
        # preparation moving (the total is unknown: sources are streamed).
        docs = read(tqdm(docs, desc=f"preparing {self.language or 'text'} documents", unit=" docs", leave=False,
                         disable=not self.sources))
        docs = self._per_document(chunked(docs, cfg.chunk_docs), per_document)
        for name, stage in self._corpus_stages():
            tap = Tap(name)
            self.taps.append(tap)
            docs = tap(stage(docs))
        return docs

    def _per_document(self, chunks: Iterator[list[Document]], taps: list[Tap]) -> Iterator[Document]:
        for result in self.pool.map(self.stages, chunks):
            merge_into(result, self.drops, taps, self.stage_seconds)
            yield from result.docs

    def _corpus_stages(self) -> list[tuple[str, Any]]:
        """(name, fn(docs) -> docs) for the enabled stages that need the whole corpus, in order."""
        cfg, stages = self.cfg, []
        if cfg.dedup.exact or cfg.dedup.near:
            stages.append(("dedup", lambda docs: dedup.dedup_documents(docs, cfg.dedup, self.drops, self.dedup_stats)))
        if self.index is not None:
            stages.append(("decontam", lambda docs: decontam.decontaminate(docs, self.index, self.drops)))
        return stages

    def report(self) -> dict[str, dict[str, Any]]:
        return source_report(self.taps[0], self.taps[-1], self.drops) if self.taps else {}


def _with_role(entries: list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
    return [{**entry, "role": role} for entry in entries]


def prepare(
    cfg: DataConfig, tokenizer, out_dir: str | Path, block_tokens: int = 256, executor: str | None = None
) -> PreparedCorpus:
    """Run every stage over ``cfg.sources`` (+ replay) and write the outputs listed in the module docstring.

    ``cfg.block_tokens`` sets the block length; when it is 0, ``block_tokens`` does
    (the recipe passes ``model.max_seq_len_tokens``). When what survives fills no
    block, the report and funnel are still written, then
    :class:`~cptnb.errors.CorpusTooSmallError` says what survived and what to change.
    ``executor`` (default ``cfg.scale.executor``) runs the corpus stages in process or
    on a datatrove executor (local, slurm, ray; see :mod:`cptnb.data.scale`).

    Example::

        prepared = prepare(DataConfig(sources=["data_samples/vi"]), tokenizer, "runs/corpus")
        prepared.report["total"]["dropped"]
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = _contamination_index(cfg)
    scale = cfg.scale if executor is None else cfg.scale.replace(executor=executor)
    if scale.executor != "inprocess":
        from cptnb.data.scale.merge import ScaledStream

        work = Path(scale.work_dir) if scale.work_dir else out / "scale"
        domain_chain = ScaledStream(cfg, cfg.sources, cfg.language, index, work / "domain", scale)
        general_chain = ScaledStream(cfg, cfg.replay_sources, cfg.replay_language, index, work / "general", scale)
        domain_chain.run_shards()
        general_chain.run_shards()
        return _finish(cfg, tokenizer, out, block_tokens, index, domain_chain, general_chain)
    # One pool for both corpora, started before the tokenizer runs (forking after it would make it warn).
    with StagePool(worker_count(cfg.num_proc, [*cfg.sources, *cfg.replay_sources])) as pool:
        domain_chain = CorpusStream(cfg, cfg.sources, cfg.language, index, pool)
        general_chain = CorpusStream(cfg, cfg.replay_sources, cfg.replay_language, index, pool)
        return _finish(cfg, tokenizer, out, block_tokens, index, domain_chain, general_chain)


def _finish(cfg: DataConfig, tokenizer, out: Path, block_tokens: int, index, domain_chain, general_chain) -> PreparedCorpus:
    """Held-out split, replay mix and packing over the two corpus streams, then report, funnel and fertility."""
    held_domain = _HeldoutSink(out / "heldout_domain.jsonl")
    held_general = _HeldoutSink(out / "heldout_general.jsonl")

    domain = held_domain.route(split_heldout(domain_chain.documents(), cfg.heldout_share, "domain"))
    replay: Iterator[Document] = iter(())
    if cfg.replay_sources:
        replay = held_general.route(split_heldout(general_chain.documents(), cfg.heldout_share, "general"))
    stats = MixStats(cfg.replay_share)
    mixed = mix_replay(domain, replay, cfg.replay_share, tokenizer, drops=general_chain.drops, stats=stats)
    # mix_replay already counted the words and bytes of every document it yields.
    packed = pack_documents(mixed, tokenizer, cfg.block_tokens or block_tokens, out_dir=out / "train", count_text=False,
                            packing=cfg.packing)
    packed.words, packed.bytes = stats.domain_words + stats.replay_words, stats.domain_bytes + stats.replay_bytes
    split_counts = {"domain_docs": len(held_domain.texts), "general_docs": len(held_general.texts)}
    # Held-out files given explicitly join the split-off documents (cleaned the same way, never trained on).
    heldout_files: dict[str, list[dict[str, Any]]] = {"heldout_domain": [], "heldout_general": []}
    for sink, files, role in ((held_domain, cfg.heldout_domain, "heldout_domain"),
                              (held_general, cfg.heldout_general, "heldout_general")):
        read = read_documents(files, cfg.text_field, files_read=heldout_files[role])
        for doc in clean_documents(read, cfg.min_chars):
            sink.keep(doc)
    held_domain.close()
    held_general.close()
    source_files = [
        *_with_role(domain_chain.files_read, "domain"),
        *_with_role(general_chain.files_read, "replay"),
        *(entry for role, entries in heldout_files.items() for entry in _with_role(entries, role)),
        *(_with_role(file_manifest(index.files), "eval_tasks") if index is not None else []),
    ]

    per_source = {**domain_chain.report(), **general_chain.report()}
    check_accounting(per_source)
    report = {
        "sources": per_source,
        "total": totals(per_source),
        "stages": [t.name for t in domain_chain.taps],
        "tokens": {
            **packed.summary(),
            "domain_tokens": stats.domain_tokens,
            "replay_tokens": stats.replay_tokens,
            "replay_share_target": cfg.replay_share,
            "replay_share_achieved": round(stats.achieved_share, 4),
            "replay_exhausted": stats.replay_exhausted,
        },
        "heldout": {
            **split_counts,
            "domain_file_docs": len(held_domain.texts) - split_counts["domain_docs"],
            "general_file_docs": len(held_general.texts) - split_counts["general_docs"],
        },
        "fertility": stats.fertility(),
        "dedup": {side: asdict(chain.dedup_stats) for side, chain in (("domain", domain_chain), ("general", general_chain))},
        "decontamination": {"files_hit": dict(index.hits) if index is not None else {}},
        # How words were cut for the filters, dedup and decontamination (a fallback is named as such).
        "segmentation": {"domain": segmentation_report(cfg.language, cfg.filters.profile),
                         "general": segmentation_report(cfg.replay_language, cfg.filters.profile)},
        "source_files": source_files,
    }
    write_json(out / "report.json", report)
    write_json(out / "fertility.json", report["fertility"])
    curves = {**funnel(domain_chain.taps), **funnel(general_chain.taps)}
    draw_funnel(report["stages"], curves, out / "funnel.png")
    log.info("prepared %s: %s", out, report["total"])
    if packed.num_blocks == 0:  # the report is written first, so the learner can see why
        raise CorpusTooSmallError(too_small_message(report, out / "report.json"))
    return PreparedCorpus(out, packed, held_domain.texts, held_general.texts, report)
