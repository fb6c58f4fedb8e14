"""Decontamination: drop training documents that contain evaluation text.

Every word 13-gram (``ngram_words``) of every evaluation item is indexed: the
question, each choice, the passage or context of multiple-choice items, and the
text of lambada items (whose last word is the answer). A training document
sharing any of these n-grams is dropped and counted as ``contaminated``, and the
task file it matched is counted in ``index.hits``. Text is compared after the
same normalization as deduplication (NFC, lowercase, punctuation and symbols
removed, whitespace collapsed), so "Thủ đô của Pháp?" in a decomposed-Unicode
web page still matches.

Evaluation texts shorter than ``ngram_words`` (most questions, all choices) are
indexed whole, as one gram of their own length. Such a gram matches a document
that contains it as a contiguous run of words when it has at least
``short_text_min_words`` words (8 by default: a verbatim 8-word question inside a
training page is a leak); shorter ones, like the choice "Hà Nội", only match a
document whose whole normalized text is exactly that, since as substrings they
would remove every document that mentions Hanoi.

Example::

    index = build_contamination_index(["data_samples/eval/exams_vi/test.jsonl"])
    clean = list(decontaminate(docs, index, drops))
    index.hits  # Counter({'.../exams_vi/test.jsonl': 2})
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from cptnb.configbase import Section, option
from cptnb.data.documents import Document, DropCounter
from cptnb.data.sources import read_records
from cptnb.data.textkey import gram_hashes, gram_hashes_by_length, word_hashes
from cptnb.errors import DataError

_U64 = np.uint64


@dataclass
class DecontamConfig(Section):
    """Which documents count as contaminated by the evaluation tasks."""

    enabled: bool = option(True, "Drop training documents that share a word n-gram with an evaluation item.")
    ngram_words: int = option(13, "Length in words of the shared run that marks a document as contaminated.")
    short_text_min_words: int = option(
        8, "Evaluation texts shorter than ngram_words match inside a document only if at least this many words long."
    )

    def problems(self) -> list[str]:
        """Every invalid value, with the fix (empty when the config is valid)."""
        p: list[str] = []
        if not isinstance(self.enabled, bool):
            p.append(f"enabled must be true or false, got {self.enabled!r}")
        for name in ("ngram_words", "short_text_min_words"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                p.append(f"{name} must be an integer >= 1, got {value!r}")
        if not p and self.short_text_min_words > self.ngram_words:
            p.append(
                f"short_text_min_words ({self.short_text_min_words}) must be <= ngram_words ({self.ngram_words})"
            )
        return p


class ContaminationIndex:
    """Hashes of the word n-grams of evaluation items, and which task file each came from.

    ``hits`` counts, per task file, the training documents it contaminated.
    """

    def __init__(self, ngram_words: int = 13, short_text_min_words: int = 8):
        self.ngram_words = ngram_words
        self.short_text_min_words = min(short_text_min_words, ngram_words)
        self.files: list[str] = []
        self.items = 0
        self.hits: Counter[str] = Counter()
        self._owners: dict[int, int] = {}  # gram hash -> bitmask of file indices
        self._lengths: set[int] = set()  # gram lengths present in the index
        self._filter: np.ndarray | None = None  # built lazily after the last add_text
        self._filter_shift = _U64(64)
        self._sorted = np.empty(0, dtype=_U64)

    def __len__(self) -> int:
        return len(self._owners)

    def add_text(self, text: str, file_index: int) -> None:
        """Index ``text`` for the task file ``self.files[file_index]``."""
        hashes = word_hashes(text)
        if len(hashes) == 0:
            return
        length = min(len(hashes), self.ngram_words)  # a short text is one gram: itself
        for gram in gram_hashes_by_length(hashes, [length])[length].tolist():
            self._owners[gram] = self._owners.get(gram, 0) | (1 << file_index)
        self._lengths.add(length)
        self._filter = None

    def freeze(self) -> ContaminationIndex:
        """Build the lookup filter (done by the first lookup after ``add_text``).

        The filter is one byte per slot, 16-32 slots per gram, addressed by the top
        bits of the gram hash: a document's grams are screened with one vectorized
        gather (several times faster than a binary search); only those that pass,
        the real hits and 3-6% chance ones, are binary-searched in the sorted
        grams. Small enough to stay in cache for evaluation suites of ~10k grams.
        """
        bits = min(max((16 * len(self._owners)).bit_length(), 10), 26)  # at most 64 MB
        self._filter_shift = _U64(64 - bits)
        self._filter = np.zeros(1 << bits, dtype=bool)
        self._sorted = np.sort(np.fromiter(self._owners, dtype=_U64, count=len(self._owners)))
        self._filter[self._sorted >> self._filter_shift] = True
        return self

    def matches(self, text: str) -> list[str]:
        """Task files sharing a gram with ``text`` (empty when the text is clean)."""
        return self.matches_many([text])[0]

    def matches_many(self, texts: list[str]) -> list[list[str]]:
        """:meth:`matches` for many texts at once: one NumPy pass over all their words."""
        if self._filter is None:
            self.freeze()
        hashes = [word_hashes(text) for text in texts]
        masks = [0] * len(texts)
        if self._owners and any(len(h) for h in hashes):
            self._screen(hashes, masks)
        return [[name for i, name in enumerate(self.files) if mask >> i & 1] for mask in masks]

    def _screen(self, hashes: list[np.ndarray], masks: list[int]) -> None:
        """OR into ``masks[d]`` the files of every indexed gram found in document ``d``."""
        assert self._filter is not None
        lengths = [n for n in self._lengths if n >= self.short_text_min_words]  # may match inside a text
        flat = np.concatenate(hashes)
        ends = np.cumsum([len(h) for h in hashes])
        doc_of = np.repeat(np.arange(len(hashes)), [len(h) for h in hashes])
        for length, grams in gram_hashes_by_length(flat, lengths).items():
            # Grams of the concatenation that run past their document's end are not real.
            start = np.flatnonzero(self._filter[grams >> self._filter_shift])
            start = start[start + length <= ends[doc_of[start]]]
            # The filter lets ~5% chance grams through; a binary search over those keeps only real hits.
            found = self._sorted[np.minimum(np.searchsorted(self._sorted, grams[start]), len(self._sorted) - 1)]
            start = start[found == grams[start]]
            for doc, gram in zip(doc_of[start].tolist(), grams[start].tolist()):
                masks[doc] |= self._owners[gram]
        for doc, h in enumerate(hashes):  # a short text is also one gram as a whole
            if 0 < len(h) < self.ngram_words and len(h) in self._lengths:
                masks[doc] |= self._owners.get(int(gram_hashes(h, len(h))[0]), 0)

    def __repr__(self) -> str:
        return (
            f"ContaminationIndex({len(self)} grams of <= {self.ngram_words} words, "
            f"{self.items} items, {len(self.files)} files)"
        )


def _item_texts(item: Any, where: str) -> list[str]:
    """The texts of one evaluation item that must not appear in training data."""
    if not isinstance(item, dict):
        kind = type(item).__name__
        raise DataError(f"{where}: expected one JSON object per line, got {kind}; fix or remove the line")
    if "question" not in item and "text" not in item:
        raise DataError(
            f"{where}: item has neither 'question' (multiple choice) nor 'text' (lambada); "
            "add one, or remove the line"
        )
    texts: list[str] = []
    for key in ("question", "passage", "context", "text"):
        if key in item and item[key] is not None:
            if not isinstance(item[key], str):
                raise DataError(f"{where}: field '{key}' must be a string, got {type(item[key]).__name__}")
            texts.append(item[key])
    if "choices" in item:
        texts += _choice_texts(item["choices"], where)
    return texts


def _choice_texts(choices: Any, where: str) -> list[str]:
    expected = 'expected {"label": [...], "text": [...]} with a string per choice'
    if not isinstance(choices, dict) or not isinstance(choices.get("text"), list):
        raise DataError(f"{where}: field 'choices' is malformed ({expected}), got {json.dumps(choices)[:80]}")
    bad = [t for t in choices["text"] if not isinstance(t, str)]
    if bad:
        raise DataError(f"{where}: field 'choices.text' has a non-string choice {bad[0]!r} ({expected})")
    return list(choices["text"])


def _read_items(path: Path) -> Iterator[list[str]]:
    """Per item of a task file, its texts; a bad line raises DataError naming file:line."""
    if not path.is_file():
        raise DataError(f"{path}: evaluation task file not found; check the path (DataConfig.eval_tasks)")
    for where, item in read_records(path):
        yield _item_texts(item, where)


def _expand(task_paths: Iterable[Path | str]) -> list[Path]:
    files: list[Path] = []
    for spec in task_paths:
        path = Path(spec)
        files += sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]
    return files


def build_contamination_index(
    task_paths: Iterable[Path | str], ngram_words: int = 13, short_text_min_words: int = 8
) -> ContaminationIndex:
    """Index every word ``ngram_words``-gram of the evaluation items in ``task_paths`` (JSONL files or folders).

    Items are ARC-like (``question``, ``choices: {label, text}``, optional
    ``passage``/``context``) or lambada-like (``text``). A malformed line raises
    :class:`~cptnb.errors.DataError` naming ``file:line`` and what to fix.

    Example::

        index = build_contamination_index(["data_samples/eval"])
        len(index), index.files
    """
    index = ContaminationIndex(ngram_words, short_text_min_words)
    for path in _expand(task_paths):
        index.files.append(str(path))
        file_index = len(index.files) - 1
        for texts in _read_items(path):
            index.items += 1
            for text in texts:
                index.add_text(text, file_index)
    return index.freeze()


def decontaminate(
    docs: Iterable[Document], index: ContaminationIndex, drops: DropCounter, batch_docs: int = 256
) -> Iterator[Document]:
    """Yield, in order, the documents that share no indexed gram; count the others as ``contaminated``.

    Each task file that matched a dropped document gets one more in ``index.hits``.
    Documents are screened ``batch_docs`` at a time, which is what makes it fast.
    """
    it = iter(docs)
    while batch := list(islice(it, batch_docs)):
        for doc, matched in zip(batch, index.matches_many([d.text for d in batch])):
            if matched:
                index.hits.update(matched)
                drops.drop(doc.source, "contaminated", len(doc.text))
            else:
                yield doc
