"""The whole corpus pipeline in one call: ``prepare(cfg, tokenizer, out_dir)``.

sources -> clean -> language id -> quality filters -> dedup -> decontamination
-> held-out split -> replay mix -> tokenize + pack. Every stage streams; a
:class:`~cptnb.data.report.Tap` after each one feeds the funnel, and the
:class:`DropCounter` records why each lost document went, so ``report.json``
satisfies ``docs_in == docs_kept + sum(dropped)`` for every source.

Outputs in ``out_dir``: ``train/`` (packed ``datasets`` folder),
``heldout_domain.jsonl``, ``heldout_general.jsonl``, ``report.json``,
``funnel.png``, ``fertility.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from cptnb.config import DataConfig
from cptnb.data import decontam, dedup, filters, langid
from cptnb.data.clean import clean_documents
from cptnb.data.dedup import DedupStats
from cptnb.data.documents import Document, DropCounter
from cptnb.data.mix import MixStats, mix_replay
from cptnb.data.pack import PackedCorpus, pack_documents
from cptnb.data.report import Tap, check_accounting, draw_funnel, funnel, source_report, totals, write_json
from cptnb.data.sources import read_documents
from cptnb.data.split import split_heldout

log = logging.getLogger(__name__)


@dataclass
class PreparedCorpus:
    """What ``prepare`` produced, in memory and on disk."""

    out_dir: Path
    packed: PackedCorpus
    heldout_domain: list[str]
    heldout_general: list[str]
    report: dict[str, Any] = field(default_factory=dict)


class _HeldoutSink:
    """Routes held-out documents to a JSONL file while training documents flow on."""

    def __init__(self, path: Path):
        self.path = path
        self.texts: list[str] = []
        self._fh = open(path, "w", encoding="utf-8")

    def keep(self, doc: Document) -> None:
        self.texts.append(doc.text)
        self._fh.write(json.dumps({"id": doc.id, "source": doc.source, "text": doc.text}, ensure_ascii=False) + "\n")

    def route(self, pairs: Iterable[tuple[Document, bool]]) -> Iterator[Document]:
        """Keep the held-out documents, pass the others on."""
        for doc, held in pairs:
            if held:
                self.keep(doc)
            else:
                yield doc

    def close(self) -> None:
        self._fh.close()


def _stages(cfg: DataConfig, drops: DropCounter, language: str, index, dedup_stats) -> list[tuple[str, Any]]:
    """(name, fn(docs) -> docs) for every enabled stage after cleaning, in order."""
    stages: list[tuple[str, Any]] = []
    if cfg.langid.enabled and language:
        lang_cfg = cfg.langid.for_languages([language])
        stages.append(("language", lambda docs: langid.filter_language(docs, lang_cfg, drops)))
    if cfg.filters.enabled:
        filter_cfg = cfg.filters.resolved(language)
        stages.append(("quality", lambda docs: filters.filter_documents(docs, filter_cfg, drops)))
    if cfg.dedup.exact or cfg.dedup.near:
        stages.append(("dedup", lambda docs: dedup.dedup_documents(docs, cfg.dedup, drops, dedup_stats)))
    if index is not None:
        stages.append(("decontam", lambda docs: decontam.decontaminate(docs, index, drops)))
    return stages


def _contamination_index(cfg: DataConfig):
    """One index of the evaluation tasks' n-grams, shared by the domain and replay corpora (or None)."""
    if not (cfg.decontam.enabled and cfg.eval_tasks):
        return None
    return decontam.build_contamination_index(cfg.eval_tasks, cfg.decontam.ngram_words, cfg.decontam.short_text_min_words)


def _chain(docs: Iterator[Document], stages: list[tuple[str, Any]], taps: list[Tap]) -> Iterator[Document]:
    for name, stage in stages:
        tap = Tap(name)
        taps.append(tap)
        docs = tap(stage(docs))
    return docs


class _Chain:
    """One corpus (domain or general): its stages, taps and drop counter."""

    def __init__(self, cfg: DataConfig, sources: list[str], language: str, index):
        self.drops = DropCounter()
        self.taps: list[Tap] = []
        self.cfg, self.sources, self.language, self.index = cfg, sources, language, index
        self.dedup_stats = DedupStats()

    def documents(self) -> Iterator[Document]:
        cfg = self.cfg
        docs: Iterator[Document] = read_documents(self.sources, cfg.text_field, cfg.on_error, self.drops, cfg.txt_mode)
        stages = [("read", lambda d: d), ("clean", lambda d: clean_documents(d, cfg.min_chars, self.drops))]
        return _chain(docs, stages + _stages(cfg, self.drops, self.language, self.index, self.dedup_stats), self.taps)

    def report(self) -> dict[str, dict[str, Any]]:
        return source_report(self.taps[0], self.taps[-1], self.drops) if self.taps else {}


def prepare(cfg: DataConfig, tokenizer, out_dir: str | Path, block_tokens: int = 256) -> PreparedCorpus:
    """Run every stage over ``cfg.sources`` (+ replay) and write the outputs listed in the module docstring.

    ``cfg.block_tokens`` sets the block length; when it is 0, ``block_tokens`` does
    (the recipe passes ``model.max_seq_len_tokens``).

    Example::

        prepared = prepare(DataConfig(sources=["data_samples/vi"]), tokenizer, "runs/corpus")
        prepared.report["total"]["dropped"]
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = _contamination_index(cfg)
    domain_chain = _Chain(cfg, cfg.sources, cfg.language, index)
    general_chain = _Chain(cfg, cfg.replay_sources, cfg.replay_language, index)
    held_domain = _HeldoutSink(out / "heldout_domain.jsonl")
    held_general = _HeldoutSink(out / "heldout_general.jsonl")

    domain = held_domain.route(split_heldout(domain_chain.documents(), cfg.heldout_share, "domain"))
    replay: Iterator[Document] = iter(())
    if cfg.replay_sources:
        replay = held_general.route(split_heldout(general_chain.documents(), cfg.heldout_share, "general"))
    stats = MixStats(cfg.replay_share)
    mixed = mix_replay(domain, replay, cfg.replay_share, tokenizer, drops=general_chain.drops, stats=stats)
    packed = pack_documents(mixed, tokenizer, cfg.block_tokens or block_tokens, out_dir=out / "train")
    split_counts = {"domain_docs": len(held_domain.texts), "general_docs": len(held_general.texts)}
    # Held-out files given explicitly join the split-off documents (cleaned the same way, never trained on).
    for sink, files in ((held_domain, cfg.heldout_domain), (held_general, cfg.heldout_general)):
        for doc in clean_documents(read_documents(files, cfg.text_field), cfg.min_chars):
            sink.keep(doc)
    held_domain.close()
    held_general.close()

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
    }
    write_json(out / "report.json", report)
    write_json(out / "fertility.json", report["fertility"])
    curves = {**funnel(domain_chain.taps), **funnel(general_chain.taps)}
    draw_funnel(report["stages"], curves, out / "funnel.png")
    log.info("prepared %s: %s", out, report["total"])
    return PreparedCorpus(out, packed, held_domain.texts, held_general.texts, report)
