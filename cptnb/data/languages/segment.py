"""Word segmentation behind one interface, for scripts with and without spaces between words.

Every rule that counts "words" (Gopher, C4, FineWeb), the near-duplicate shingles, the
decontamination n-grams and fertility (tokens per word) ask a :class:`Segmenter` for
the text with its words separated by single spaces (:meth:`Segmenter.spaced`), so code
written for whitespace tokens works unchanged on Thai. Spacing only inserts spaces (or,
for character n-grams, rewrites a run of one script), never a newline, so lines and
paragraphs stay where they were.

Segmenters
----------
``whitespace``
    Languages that write spaces between words (Vietnamese, English, Indonesian,
    Swahili...): the text itself. Vietnamese tokens are syllables, as before.
``thai``
    Thai (U+0E00-U+0E7F) segmented with PyThaiNLP's ``newmm`` dictionary maximal
    matching (pinned ``pythainlp==5.4.0``, Apache-2.0, a pure-Python wheel with its
    dictionary inside: nothing is downloaded). Only runs of Thai script are segmented;
    Latin words and numbers between them stay as written. ~120,000 characters/s on one core.
``char_ngram``
    The fallback for scripts that write no spaces and have no segmenter here (Lao,
    Khmer, Burmese, Chinese, Japanese), or Thai without PyThaiNLP: each run of such a
    script becomes its overlapping character bigrams ("abcd" -> "ab bc cd"), which
    shift with the text, so a copied or near-copied passage still shares its n-grams.
    Word counts are then character counts and mean word length is 2: a profile for such
    a language must be calibrated with this segmenter (``cptnb calibrate`` does).

:func:`script_spaced` is what dedup and decontamination use: it needs no language,
segments whatever runs of space-less scripts a text contains, and returns text
without any of them unchanged (one regex search), so Vietnamese and English hash
exactly as before.

Example::

    Segmenter("thai").words("ฉันไปตลาดเมื่อเช้านี้")  # ['ฉัน', 'ไป', 'ตลาด', 'เมื่อ', 'เช้า', 'นี้']
    Segmenter("char_ngram").spaced("ສະບາຍດີ")        # 'ສະ ະບ ບາ າຍ ຍດ ດີ'
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from cptnb.errors import ModelNotAvailableError

log = logging.getLogger(__name__)

SEGMENTERS = ("whitespace", "thai", "char_ngram")
PYTHAINLP_PIN = "pythainlp==5.4.0"

_THAI_RUN = re.compile("[\u0e00-\u0e7f]+")
# Scripts written without spaces between words that no segmenter here covers: character bigrams.
_UNSEGMENTED = "\u0e80-\u0eff\u1000-\u109f\u1780-\u17ff\u19e0-\u19ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uaa60-\uaa7f"
_UNSEGMENTED_RUN = re.compile(f"[{_UNSEGMENTED}]+")
_ANY_SPACELESS = re.compile(f"[\u0e00-\u0e7f{_UNSEGMENTED}]")
_ANY_SPACELESS_RUN = re.compile(f"[\u0e00-\u0e7f{_UNSEGMENTED}]+")


def char_ngrams(run: str, n: int = 2) -> str:
    """The overlapping character n-grams of ``run`` joined by spaces; a run shorter than ``n`` stays whole."""
    if len(run) <= n:
        return run
    return " ".join(run[i : i + n] for i in range(len(run) - n + 1))


@functools.lru_cache(maxsize=1)
def _thai_tokenize() -> Callable[[str], list[str]] | None:
    """PyThaiNLP's newmm segmenter, or None when the package is not installed."""
    try:
        from pythainlp.tokenize import word_tokenize
    except ImportError:
        return None
    return functools.partial(word_tokenize, engine="newmm", keep_whitespace=False)


def thai_available() -> bool:
    """Whether the Thai segmenter (PyThaiNLP) can be used here."""
    return _thai_tokenize() is not None


def _space_thai_runs(text: str, tokenize: Callable[[str], list[str]]) -> str:
    return _THAI_RUN.sub(lambda m: " " + " ".join(tokenize(m.group())) + " ", text)


def _bigram_runs(text: str, pattern: re.Pattern[str]) -> str:
    return pattern.sub(lambda m: " " + char_ngrams(m.group()) + " ", text)


@dataclass(frozen=True)
class Segmenter:
    """One way of cutting text into words: ``whitespace``, ``thai`` or ``char_ngram`` (see the module doc)."""

    name: str = "whitespace"

    def __post_init__(self) -> None:
        if self.name not in SEGMENTERS:
            raise ValueError(f"segmenter must be one of {', '.join(SEGMENTERS)}, got {self.name!r}")

    @property
    def splits_text(self) -> bool:
        """False for ``whitespace``: the text's own whitespace tokens are its words."""
        return self.name != "whitespace"

    def spaced(self, text: str) -> str:
        """``text`` with its words separated by spaces (newlines kept where they were)."""
        if self.name == "whitespace":
            return text
        if self.name == "thai":
            tokenize = _thai_tokenize()
            if tokenize is None:
                raise ModelNotAvailableError(
                    f"Thai word segmentation needs PyThaiNLP: pip install {PYTHAINLP_PIN} "
                    "(or use a profile calibrated with segmenter: char_ngram)"
                )
            return _space_thai_runs(text, tokenize)
        return _bigram_runs(text, _ANY_SPACELESS_RUN)

    def words(self, text: str) -> list[str]:
        """The words of ``text``, in order (whitespace tokens of :meth:`spaced`)."""
        return self.spaced(text).split()

    def describe(self) -> str:
        """One line for reports: which segmenter and what it stands on."""
        return {
            "whitespace": "whitespace tokens",
            "thai": f"PyThaiNLP newmm ({PYTHAINLP_PIN})",
            "char_ngram": "character bigrams (fallback: no word segmenter for this script)",
        }[self.name]



@functools.lru_cache(maxsize=1)
def _warn_thai_fallback() -> None:
    log.warning(
        "Thai text found but PyThaiNLP is not installed: dedup and decontamination compare Thai by character "
        "bigrams (pip install %s for words)", PYTHAINLP_PIN
    )


def script_spaced(text: str) -> str:
    """``text`` with every run of a space-less script segmented: Thai by PyThaiNLP, others by character bigrams.

    Text without such scripts comes back as the same object (the common case, one regex search).
    Used where no language is known (dedup, decontamination): the same text always gives the same words.
    """
    if not _ANY_SPACELESS.search(text):
        return text
    tokenize = _thai_tokenize()
    if tokenize is None:
        _warn_thai_fallback()
        return _bigram_runs(text, _ANY_SPACELESS_RUN)
    if _THAI_RUN.search(text):
        text = _space_thai_runs(text, tokenize)
    return _bigram_runs(text, _UNSEGMENTED_RUN) if _UNSEGMENTED_RUN.search(text) else text


def count_words(text: str) -> int:
    """Words in ``text`` as dedup and decontamination see them (space-less scripts segmented): for fertility."""
    return len(script_spaced(text).split())


def script_segmentation(texts: list[str]) -> str:
    """What :func:`script_spaced` does to ``texts``, in words for a report."""
    if not any(_ANY_SPACELESS.search(t) for t in texts):
        return "whitespace tokens"
    parts = []
    if any(_THAI_RUN.search(t) for t in texts):
        parts.append("Thai: " + (Segmenter("thai").describe() if thai_available() else "character bigrams (fallback)"))
    if any(_UNSEGMENTED_RUN.search(t) for t in texts):
        parts.append("other space-less scripts: character bigrams (fallback)")
    return "; ".join(parts)


def dedup_segmentation() -> str:
    """How dedup and decontamination cut words here, for ``report.json`` (says so when a fallback is in use)."""
    thai = Segmenter("thai").describe() if thai_available() else "character bigrams (fallback: PyThaiNLP not installed)"
    return (f"Thai: {thai}; Lao, Khmer, Burmese, Chinese, Japanese: character bigrams (fallback: no word segmenter "
            "here); other scripts: whitespace tokens")
