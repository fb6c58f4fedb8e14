"""The per-document stages (clean, language id, quality filters) over chunks of documents, in worker processes.

Why chunks: each stage runs over a whole chunk before the next one starts. A
document pulled through all three stages in turn leaves the CPU's caches and branch
predictors cold for the next stage's code; a run of one stage over many documents
keeps them warm (measured on the 50,000-document benchmark corpus: 12% less CPU time
for the same calls).

Why processes: these three stages are pure Python or single-threaded C per document
and take ~90% of the corpus pipeline's time, so N cores give nearly N times the
throughput. Reading, deduplication and decontamination stay in the main process:
they keep state across the whole corpus (what was seen, what was kept).

Guarantees, whatever the number of workers:

* order: chunks come back in the order they were read, so the output (and every
  count in ``report.json``) is identical to ``num_proc=1``;
* memory: at most ``2 x workers`` chunks are in flight, so the stream stays bounded;
* errors: an exception in a worker is raised again in the main process, with a note
  naming the stage and the document (id and source file) it was processing.

Workers are started with ``fork`` on Linux: they start in milliseconds, inherit the
language-id model already loaded here, and never re-import the caller's script.
Elsewhere (macOS, Windows) ``spawn`` is used, as Python recommends there.

Example::

    stages = DocumentStages(min_chars=20, langid=LangIdConfig(), filters=FilterConfig.for_language("vi"))
    with StagePool(workers=2) as pool:
        for result in pool.map(stages, chunked(read_documents(["data_samples/vi"]), 256)):
            result.docs, result.drops.by_reason()
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from cptnb.data import filters as quality
from cptnb.data import langid
from cptnb.data.clean import clean_documents
from cptnb.data.documents import Document, DropCounter
from cptnb.data.report import Tap
from cptnb.errors import CptnbError

log = logging.getLogger(__name__)

# "auto" starts workers only for inputs at least this large: below it (notebook samples, tests)
# starting processes costs more than it saves.
AUTO_MIN_INPUT_BYTES = 8 * 1024 * 1024


@dataclass
class ChunkResult:
    """What the per-document stages made of one chunk."""

    docs: list[Document] = field(default_factory=list)  # kept documents, in input order
    drops: DropCounter = field(default_factory=DropCounter)  # dropped ones, by source and reason
    taps: list[Tap] = field(default_factory=list)  # per stage: documents and characters that passed it
    seconds: dict[str, float] = field(default_factory=dict)  # per stage: wall seconds spent on this chunk


@dataclass(frozen=True)
class DocumentStages:
    """The per-document stages of one corpus, as a picklable recipe that a worker process can run.

    A stage whose config is None is off (cleaning always runs).
    """

    min_chars: int = 20
    langid: langid.LangIdConfig | None = None
    filters: quality.FilterConfig | None = None

    @property
    def names(self) -> list[str]:
        """Stage names in order, as they appear in ``report.json``'s ``stages`` and the funnel."""
        return ["clean"] + (["language"] if self.langid else []) + (["quality"] if self.filters else [])

    def run(self, docs: list[Document]) -> ChunkResult:
        """Run every stage over the whole chunk in turn."""
        result = ChunkResult()
        for name in self.names:
            cursor = _Cursor(docs)
            tap = Tap(name)
            start = time.perf_counter()
            try:
                docs = list(tap(self._stage(name, cursor, result.drops)))
            except Exception as err:
                _note(err, f"raised by the {name} stage while processing {cursor.where()}")
                raise
            result.seconds[name] = time.perf_counter() - start
            result.taps.append(tap)
        result.docs = docs
        return result

    def _stage(self, name: str, docs: Iterable[Document], drops: DropCounter) -> Iterator[Document]:
        if name == "clean":
            return clean_documents(docs, self.min_chars, drops)
        if name == "language":
            assert self.langid is not None
            return langid.filter_language(docs, self.langid, drops)
        assert self.filters is not None
        return quality.filter_documents(docs, self.filters, drops)


class _Cursor:
    """Iterates a chunk and remembers the document handed out last (for error messages)."""

    def __init__(self, docs: list[Document]):
        self.docs, self.current = docs, None

    def __iter__(self) -> Iterator[Document]:
        for doc in self.docs:
            self.current = doc
            yield doc

    def where(self) -> str:
        doc = self.current
        return "the first document" if doc is None else f"document {doc.id!r} of {doc.source}"


def _note(err: BaseException, text: str) -> None:
    if hasattr(err, "add_note"):  # Python >= 3.11; notes survive the trip back from a worker
        err.add_note(f"cptnb: {text}")


def chunked(docs: Iterable[Document], size: int) -> Iterator[list[Document]]:
    """Lists of ``size`` consecutive documents (the last one shorter)."""
    it = iter(docs)
    while chunk := list(islice(it, size)):
        yield chunk


def merge_into(result: ChunkResult, drops: DropCounter, taps: list[Tap], seconds: dict[str, float]) -> None:
    """Add one chunk's drops, stage counts and seconds to the corpus-wide ones (taps in stage order)."""
    drops.docs.update(result.drops.docs)
    drops.chars.update(result.drops.chars)
    for tap, part in zip(taps, result.taps):
        tap.docs.update(part.docs)
        tap.chars.update(part.chars)
    for name, spent in result.seconds.items():
        seconds[name] = seconds.get(name, 0.0) + spent


def usable_cores() -> int:
    """CPU cores this process may run on (respects taskset/cgroup affinity where the OS reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _input_bytes(sources: Iterable[Any]) -> int | None:
    """Total size of the source files, or None when a source is a ``datasets`` object (size unknown)."""
    from cptnb.data.sources import expand_paths

    total = 0
    for source in sources:
        if not isinstance(source, (str, Path)):
            return None
        for path in expand_paths([source]):
            files = path.rglob("*") if path.is_dir() else [path]
            total += sum(f.stat().st_size for f in files if f.is_file())
    return total


def worker_count(num_proc: int | str, sources: Iterable[Any] = ()) -> int:
    """Workers for ``DataConfig.num_proc``: the integer itself, or for "auto" one per core on large inputs.

    "auto" gives 1 (no workers) on a single core and when ``sources`` hold less than
    :data:`AUTO_MIN_INPUT_BYTES`; sources whose size is unknown (``datasets`` objects) count as large.
    """
    if num_proc != "auto":
        return max(1, int(num_proc))
    cores = usable_cores()
    if cores < 2:
        return 1
    size = _input_bytes(sources)
    return cores if size is None or size >= AUTO_MIN_INPUT_BYTES else 1


def start_method() -> str:
    """fork on Linux (fast, shares the loaded model, no re-import of ``__main__``), spawn elsewhere."""
    return "fork" if sys.platform.startswith("linux") else "spawn"


def document_stages(cfg, language: str) -> DocumentStages:
    """The per-document stages a :class:`~cptnb.config.DataConfig` asks for, for a corpus in ``language``.

    ``language`` "" switches language id off. Used by the in-process pipeline and the scaled path alike.
    """
    from cptnb.data.languages.profile import find_profile

    filters = cfg.filters.resolved(language) if cfg.filters.enabled else None
    # The language-id labels that count as this language come from its profile (Indonesian: id, and ms for
    # the passages the model calls Malay); without a profile, the code itself.
    profile = filters.language_profile if filters is not None else find_profile(language, cfg.filters.profile)
    labels = profile.labels if profile is not None and profile.language == language else [language]
    return DocumentStages(
        min_chars=cfg.min_chars,
        langid=cfg.langid.for_languages(labels) if cfg.langid.enabled and language else None,
        filters=filters,
    )


class StagePool:
    """Runs :class:`DocumentStages` over chunks in ``workers`` processes (or in this one when 1), in order.

    Use as a context manager, or call :meth:`close`; one pool can serve several corpora.
    """

    def __init__(self, workers: int = 1):
        self.workers = max(1, int(workers))
        self.window = 2 * self.workers  # chunks in flight: enough to keep every worker busy
        self._executor: ProcessPoolExecutor | None = None

    def map(self, stages: DocumentStages, chunks: Iterable[list[Document]]) -> Iterator[ChunkResult]:
        """``stages.run(chunk)`` for each chunk, yielded in input order."""
        if self.workers == 1:
            for chunk in chunks:
                yield stages.run(chunk)
            return
        executor = self._start(stages)
        pending: deque[Future[ChunkResult]] = deque()
        try:
            for chunk in chunks:
                pending.append(executor.submit(stages.run, chunk))
                if len(pending) >= self.window:
                    yield self._result(pending.popleft())
            while pending:
                yield self._result(pending.popleft())
        finally:
            for future in pending:  # the consumer stopped early or an error is on its way up
                future.cancel()

    def _start(self, stages: DocumentStages) -> ProcessPoolExecutor:
        if stages.langid is not None:
            langid.preload()  # before the fork, so that every worker shares it
        if self._executor is None:
            context = multiprocessing.get_context(start_method())
            self._executor = ProcessPoolExecutor(self.workers, mp_context=context)
            log.info("corpus stages: %d worker processes (%s)", self.workers, context.get_start_method())
        return self._executor

    @staticmethod
    def _result(future: Future[ChunkResult]) -> ChunkResult:
        try:
            return future.result()
        except BrokenProcessPool as err:
            raise CptnbError(
                f"a worker process of the corpus pipeline died ({err}); this is usually memory: retry with "
                "data.num_proc: 1, or a smaller data.chunk_docs"
            ) from err

    def close(self) -> None:
        """Stop the workers (queued chunks are dropped)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> StagePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
