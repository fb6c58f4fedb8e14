"""Quality filters: Gopher quality and repetition, FineWeb-style line rules, C4 line rules.

Each document meets the rules in a fixed order and the first rule it fails decides
the drop reason (``gopher_word_count``, ``gopher_top_3gram``, ``c4_too_few_sentences``...):

1. Gopher quality (Rae et al. 2021, appendix A): word count, mean word length,
   symbol-to-word ratio, bullet and ellipsis lines, words with a letter, stopwords.
2. Gopher repetition: duplicate lines and paragraphs (by count and by characters),
   the most frequent 2/3/4-gram's share of characters, duplicated 5..10-grams.
3. FineWeb-style (Penedo et al. 2024): lines ending in punctuation, characters in
   duplicated lines, short ("list-like") lines.
4. C4 (Raffel et al. 2020): whole-document rules (``lorem ipsum``, optionally
   ``{``), then line removal, then a minimum number of sentences.

Rules 1-3 read the document as it arrived; only C4 edits the text, and it runs last
so that the FineWeb line statistics still see the lines C4 would remove (FineWeb
itself switches C4's punctuation rule off for the same reason). A kept document
may therefore come back shorter: lines without terminal punctuation, shorter than
``c4_min_words_per_line`` words, or carrying "javascript" or cookie/policy
boilerplate are gone, and so are citation markers such as ``[3]`` and ``[edit]``.

Words come from the language's segmenter (:mod:`cptnb.data.languages.segment`):
whitespace tokens where the language writes spaces (in Vietnamese each token is a
syllable, "thành phố" is two), PyThaiNLP words for Thai, character bigrams for other
scripts without spaces. The thresholds that differ by language, the stopwords and the
sentence ends come from the language's profile (:mod:`cptnb.data.languages.profile`,
``cptnb/data/languages/profiles/<code>.yaml``); a language without one is refused with
what to run (``cptnb calibrate``), never judged by English numbers.

Example::

    cfg = FilterConfig.for_language("vi")
    drops = DropCounter()
    kept = list(filter_documents(docs, cfg, drops))
    drops.by_reason()  # {"gopher_stopwords": 3, "c4_too_few_sentences": 1, ...}
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from itertools import filterfalse, repeat
from operator import mul
from typing import Any

from cptnb.configbase import Section, option
from cptnb.data.documents import Document, DropCounter
from cptnb.data.languages.profile import (
    PROFILE_FILTER_FIELDS,
    LanguageProfile,
    builtin_languages,
    find_profile,
    missing_profile_message,
)
from cptnb.data.languages.segment import Segmenter

log = logging.getLogger(__name__)

# The FilterConfig fields whose defaults come from the language profile (vi/en values moved there unchanged).
LANGUAGE_FIELDS = PROFILE_FILTER_FIELDS

# C4 kept lines ending in . ! ? or a quote; closing curly quotes, » and … are the same idea.
TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'", "\u201d", "\u2019", "\u00bb", "\u2026", "\u3002", "\uff01", "\uff1f")
BULLETS = (
    "\u2022",
    "\u25cf",
    "\u25cb",
    "\u25e6",
    "\u25aa",
    "\u25a0",
    "\u2023",
    "\u2043",
    "\u27a2",
    "\u27a4",
    "\u25ba",
    "-",
    "*",
)
C4_POLICY_PHRASES = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
    # The same boilerplate on Vietnamese sites (these apply to every language, as before; a profile adds its own).
    "chính sách bảo mật",
    "chính sách cookie",
    "điều khoản sử dụng",
    "sử dụng cookie",
)
# Characters stripped from both ends of a token before it counts as a word.
_EDGE_PUNCT = "".join(
    sorted(set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\u201c\u201d\u2018\u2019\u00ab\u00bb\u2026\u2013\u2014\u00b7"))
)
_CITATION = re.compile(r"\[(?:\d+|edit|citation needed|cần dẫn nguồn|sửa)\]", re.IGNORECASE)
_SENTENCE_SPLIT = re.compile(r"[.!?\u2026\u3002\uff01\uff1f]+(?=[\s\"'\u201d\u2019\u00bb)]|$)")  # the default profile's
_PARAGRAPH_SPLIT = re.compile(r"\n\s*\n")
_LETTER = re.compile(r"[^\W\d_]")  # any Unicode letter, Vietnamese ones included


@dataclass
class FilterConfig(Section):
    """Thresholds of the quality filters; ``max_*`` drops above, ``min_*`` drops below.

    Ratios are in [0, 1]; set a ``max_*`` ratio to 1 (or a ``min_*`` to 0) to switch
    one rule off, or a group flag (``gopher_quality``, ``c4``...) to switch a group off.
    """

    enabled: bool = option(True, "Run the quality filters at all.")
    language: str = option(
        "vi", "Language code; fields left at None take this language's profile (built in: vi, en, th, id)."
    )
    profile: str = option(
        "", "Language profile YAML for `language` (written by `cptnb calibrate`); empty: the built-in profile."
    )
    stopwords: list = option([], "Stopwords for the stopword rule; empty means the profile's list for `language`.")

    gopher_quality: bool = option(True, "Apply the Gopher quality rules (gopher_min_words .. gopher_min_stopwords).")
    gopher_min_words: int | None = option(
        None, "Drop documents with fewer words (whitespace tokens); None: vi 70, en 50."
    )
    gopher_max_words: int | None = option(
        None, "Drop documents with more words than this; None: vi 140,000, en 100,000."
    )
    gopher_min_mean_word_length: float | None = option(
        None, "Drop documents whose mean word length in characters is below this; None: vi 2, en 3."
    )
    gopher_max_mean_word_length: float | None = option(
        None, "Drop documents whose mean word length in characters is above this; None: vi 7, en 10."
    )
    gopher_max_symbol_word_ratio: float = option(
        0.1, "Drop documents with more '#' and ellipses ('...' or '…') per word than this."
    )
    gopher_max_bullet_lines_ratio: float = option(
        0.9, "Drop documents in which a larger share of lines starts with a bullet (•, -, * ...)."
    )
    gopher_max_ellipsis_lines_ratio: float = option(
        0.3, "Drop documents in which a larger share of lines ends with '...' or '…'."
    )
    gopher_min_alpha_words_ratio: float = option(
        0.8, "Drop documents in which a smaller share of tokens contains a letter."
    )
    gopher_min_stopwords: int | None = option(
        None, "Drop documents containing fewer distinct stopwords (0 switches off); None: vi 5, en 2."
    )

    gopher_repetition: bool = option(
        True, "Apply the Gopher repetition rules (duplicate lines, paragraphs and n-grams)."
    )
    gopher_max_dup_line_ratio: float = option(
        0.3, "Drop documents in which a larger share of lines repeats an earlier line."
    )
    gopher_max_dup_line_char_ratio: float = option(
        0.2, "Drop documents in which a larger share of line characters is in repeated lines."
    )
    gopher_max_dup_paragraph_ratio: float = option(
        0.3, "Drop documents in which a larger share of paragraphs repeats an earlier one."
    )
    gopher_max_dup_paragraph_char_ratio: float = option(
        0.2, "Drop documents in which a larger share of paragraph characters is in repeated paragraphs."
    )
    gopher_max_top_2gram_char_ratio: float = option(
        0.20, "Drop documents whose most frequent word 2-gram covers a larger share of word characters."
    )
    gopher_max_top_3gram_char_ratio: float = option(
        0.18, "Drop documents whose most frequent word 3-gram covers a larger share of word characters."
    )
    gopher_max_top_4gram_char_ratio: float = option(
        0.16, "Drop documents whose most frequent word 4-gram covers a larger share of word characters."
    )
    gopher_max_dup_5gram_char_ratio: float = option(
        0.15, "Drop documents in which a larger share of word characters lies in repeated 5-grams."
    )
    gopher_max_dup_6gram_char_ratio: float = option(
        0.14, "Drop documents in which a larger share of word characters lies in repeated 6-grams."
    )
    gopher_max_dup_7gram_char_ratio: float = option(
        0.13, "Drop documents in which a larger share of word characters lies in repeated 7-grams."
    )
    gopher_max_dup_8gram_char_ratio: float = option(
        0.12, "Drop documents in which a larger share of word characters lies in repeated 8-grams."
    )
    gopher_max_dup_9gram_char_ratio: float = option(
        0.11, "Drop documents in which a larger share of word characters lies in repeated 9-grams."
    )
    gopher_max_dup_10gram_char_ratio: float = option(
        0.10, "Drop documents in which a larger share of word characters lies in repeated 10-grams."
    )

    fineweb: bool = option(True, "Apply the FineWeb-style line rules (on the text before C4 removes lines).")
    fineweb_min_line_punct_ratio: float | None = option(
        None, "Drop documents in which a smaller share of lines ends in terminal punctuation; None: vi/en 0.12, th 0."
    )
    fineweb_max_dup_line_char_ratio: float = option(
        0.01, "Drop documents in which a larger share of characters is in lines repeating an earlier line."
    )
    fineweb_short_line_chars: int = option(30, "A line of at most this many characters counts as short (list-like).")
    fineweb_max_short_line_ratio: float = option(0.67, "Drop documents in which a larger share of lines is short.")

    c4: bool = option(True, "Apply the C4 rules: drop boilerplate lines, then documents with too few sentences.")
    c4_drop_lines_without_terminal_punct: bool | None = option(
        None, "Remove lines that do not end in . ! ? … or a closing quote; None: the profile's (th: no)."
    )
    c4_min_words_per_line: int = option(3, "Remove lines with fewer words than this (0 keeps all).")
    c4_drop_javascript_lines: bool = option(
        True, "Remove lines mentioning 'javascript' (e.g. 'please enable JavaScript')."
    )
    c4_drop_policy_lines: bool = option(
        True, "Remove lines with cookie / privacy-policy / terms-of-use boilerplate (English and Vietnamese)."
    )
    c4_remove_citations: bool = option(
        True, "Delete citation markers such as [3], [edit] and [citation needed] inside lines."
    )
    c4_drop_lorem_ipsum: bool = option(True, "Drop whole documents containing 'lorem ipsum' (template pages).")
    c4_drop_curly_bracket: bool = option(
        False, "Drop whole documents containing '{' (code); off because it also drops math and templates in prose."
    )
    c4_min_sentences: int | None = option(
        None, "After line removal, drop documents with fewer sentences than this; None: the profile's (vi/en 5)."
    )

    def __post_init__(self) -> None:
        profile = None
        if isinstance(self.language, str) and isinstance(self.profile, str):
            profile = find_profile(self.language, self.profile)
        unset = [k for k in LANGUAGE_FIELDS if getattr(self, k) is None]
        # Reported by problems() with every other problem: which command writes the missing profile.
        self._missing_profile = profile is None and bool(unset)
        # Without a profile (every language field given by hand, or an invalid language) words are whitespace tokens.
        self._profile = profile or LanguageProfile(language=str(self.language))
        self._segmenter = self._profile.word_segmenter  # asked for per line by C4: built once
        self._policy_phrases = C4_POLICY_PHRASES + self._profile.boilerplate_phrases
        defaults = self._profile.filters or find_profile("en").filters  # an invalid language: checked in problems()
        for name in unset:
            setattr(self, name, defaults[name])
        super().__post_init__()

    def problems(self) -> list[str]:
        """Every invalid value, each with what would be valid."""
        p: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = str(f.type).split(" |")[0]  # "int | None" fields are filled by now
            if kind == "bool" and not isinstance(value, bool):
                p.append(f"{f.name} must be true or false, got {value!r}")
            elif f.name.endswith("_ratio") and not (_is_number(value) and 0 <= value <= 1):
                p.append(f"{f.name} must be a ratio in [0, 1], got {value!r}")
            elif kind == "int" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                p.append(f"{f.name} must be an integer >= 0, got {value!r}")
            elif kind == "float" and not (_is_number(value) and value >= 0):
                p.append(f"{f.name} must be a number >= 0, got {value!r}")
        for low, high in (
            ("gopher_min_words", "gopher_max_words"),
            ("gopher_min_mean_word_length", "gopher_max_mean_word_length"),
        ):
            lo, hi = getattr(self, low), getattr(self, high)
            if _is_number(lo) and _is_number(hi) and lo > hi:
                p.append(f"{low} ({lo}) must be <= {high} ({hi})")
        if not isinstance(self.language, str) or not self.language.strip():
            p.append(f"language must be a language code such as 'vi' or 'en', got {self.language!r}")
        if not (isinstance(self.stopwords, list) and all(isinstance(w, str) and w.strip() for w in self.stopwords)):
            p.append(f"stopwords must be a list of words, got {self.stopwords!r}")
        elif self._missing_profile and isinstance(self.language, str) and self.language.strip():
            p.append(missing_profile_message(self.language))
        elif self.gopher_min_stopwords and self.gopher_quality and not self.stopword_set:
            p.append(
                f"gopher_min_stopwords is {self.gopher_min_stopwords} but the profile for language {self.language!r} "
                f"has no stopwords (built-in profiles: {', '.join(builtin_languages())}); give stopwords or set it to 0"
            )
        if not isinstance(self.profile, str):
            p.append(f"profile must be the path of a language profile YAML (or empty), got {self.profile!r}")
        return p

    @property
    def language_profile(self) -> LanguageProfile:
        """The profile in use for ``language`` (segmenter, sentence ends, stopwords, language-id labels)."""
        return self._profile

    @property
    def segmenter(self) -> Segmenter:
        """How this language's text is cut into words."""
        return self._segmenter

    @property
    def stopword_set(self) -> frozenset[str]:
        """The stopwords in use: ``stopwords`` if given, else the profile's list for ``language``."""
        if self.stopwords:
            return frozenset(w.lower() for w in self.stopwords)
        return self._profile.stopwords

    @property
    def policy_phrases(self) -> tuple[str, ...]:
        """C4's policy/cookie phrases (English and Vietnamese) plus the profile's own."""
        return self._policy_phrases

    @classmethod
    def for_language(cls, language: str, **overrides: Any) -> FilterConfig:
        """Defaults from the profile of ``language`` ("vi", "en", "th", "id"), with ``overrides`` on top.

        A language without a profile raises :class:`~cptnb.data.languages.ProfileMissingError`
        naming ``cptnb calibrate`` and the profile to write (unless every language field is given).

        Example::

            FilterConfig.for_language("en", c4_min_sentences=3)
        """
        return cls(**{**overrides, "language": language})

    def resolved(self, language: str) -> FilterConfig:
        """This config for ``language``: values changed by hand stay, language defaults follow the language.

        A language-dependent field still equal to the default of this config's
        language is re-derived for ``language``. Comparing values (rather than
        remembering what was passed) survives a YAML round trip, where every value
        is written out. ``FilterConfig(c4_min_sentences=3, gopher_min_words=20).resolved("en")``
        keeps both values and takes the English mean word length and stopwords.
        """
        if not language or language == self.language:
            return self
        ours = self._profile.filters
        follow = {k: None for k in LANGUAGE_FIELDS if getattr(self, k) == ours.get(k)}
        return dataclasses.replace(self, language=language, **follow)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ---------------------------------------------------------------------------
# Text statistics, computed once per document and shared by the rules.
#
# Speed without changing a decision: the rules below give exactly the answers of the
# straightforward definitions (``top_ngram_char_ratio``, ``dup_ngram_char_ratio``,
# ``count_sentences``), and skip them only where a cheap bound proves the rule cannot
# fire (tests/unit/test_filters_equivalence.py checks this against the original code).


class _Text:
    """Tokens, words, lines and paragraphs of one text, each computed on first use.

    Words are taken from the lowercased text: lowercasing maps no character to or from
    whitespace or edge punctuation, never changes whether a character is a letter, and
    lowers a final sigma the same with or without the whitespace and punctuation around
    a word, so this equals lowercasing each word (checked over every code point in the tests).
    """

    def __init__(self, text: str, segmenter: Segmenter | None = None):
        self.text = text
        # Words are read from the text with its words spaced out; for whitespace languages that is the text itself.
        self.spaced = segmenter.spaced(text) if segmenter is not None and segmenter.splits_text else text

    @cached_property
    def lower(self) -> str:
        return self.spaced.lower()

    @cached_property
    def tokens(self) -> list[str]:
        """Whitespace tokens, lowercased (only their number and letters are used)."""
        return self.lower.split()

    @cached_property
    def words(self) -> list[str]:
        """Tokens without edge punctuation ("12.000" and "e-mail" stay whole); "—" or "..." alone is no word."""
        return list(filter(None, map(str.strip, self.spaced.split(), repeat(_EDGE_PUNCT))))

    @cached_property
    def ngram_words(self) -> list[str]:
        """Lowercased words: repetition does not depend on case."""
        return list(filter(None, map(str.strip, self.tokens, repeat(_EDGE_PUNCT))))

    @cached_property
    def word_chars(self) -> int:
        """Characters in the words, as written; lowercasing keeps every length unless a character grows ("İ")."""
        return self.ngram_chars if len(self.lower) == len(self.spaced) else sum(map(len, self.words))

    @cached_property
    def ngram_chars(self) -> int:
        return sum(map(len, self.ngram_words))

    @cached_property
    def heaviest_word_chars(self) -> int:
        """max over distinct words of (occurrences x length): bounds what any repeated n-gram can cover."""
        counts = Counter(self.ngram_words)
        return max(map(mul, counts.values(), map(len, counts)), default=0)

    @cached_property
    def repeats_5gram(self) -> bool:
        """Whether some word 5-gram occurs twice; if none does, no longer n-gram does either."""
        w = self.ngram_words
        return len(w) > 5 and len(set(zip(w, w[1:], w[2:], w[3:], w[4:]))) < len(w) - 4

    @cached_property
    def lines(self) -> list[str]:
        return [line.strip() for line in self.text.split("\n") if line.strip()]

    @cached_property
    def paragraphs(self) -> list[str]:
        return [p.strip() for p in _PARAGRAPH_SPLIT.split(self.text) if p.strip()]

    @cached_property
    def line_dups(self) -> tuple[int, int]:
        return _duplicates(self.lines)

    @cached_property
    def paragraph_dups(self) -> tuple[int, int]:
        return _duplicates(self.paragraphs)


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(items repeating an earlier item, characters in them); first occurrences do not count."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


def top_ngram_char_ratio(words: list[str], n: int) -> float:
    """Share of word characters covered by the most frequent n-gram (0 when no n-gram repeats).

    Overlapping occurrences each count, as in Gopher, so the value can exceed 1
    for a text such as "ha ha ha ha".
    """
    if len(words) < n:
        return 0.0
    counts = Counter(zip(*(words[i:] for i in range(n))))
    gram, freq = counts.most_common(1)[0]
    if freq < 2:
        return 0.0
    return _ratio(freq * sum(map(len, gram)), sum(map(len, words)))


def dup_ngram_char_ratio(words: list[str], n: int) -> float:
    """Share of word characters inside n-grams that repeat an earlier n-gram.

    Words are marked, not n-grams counted, so overlapping repeats never count a
    character twice: a paragraph written out twice gives 0.5.
    """
    grams = list(zip(*(words[i:] for i in range(n))))
    if len(set(grams)) == len(grams):
        return 0.0  # the usual case, decided at C speed
    seen: set[tuple[str, ...]] = set()
    repeated = [False] * len(words)
    for i, gram in enumerate(grams):
        if gram in seen:
            repeated[i : i + n] = [True] * n
        else:
            seen.add(gram)
    return _ratio(sum(len(w) for w, r in zip(words, repeated) if r), sum(map(len, words)))


def _has_letter_or_digit(piece: str) -> bool:
    return any(ch.isalnum() for ch in piece)


def count_sentences(text: str, pattern: re.Pattern[str] = _SENTENCE_SPLIT) -> int:
    """Approximate sentence count: pieces between . ! ? … that contain a letter or digit.

    Abbreviations ("TP. HCM", "Dr. Lan") can add one; that is the C4 rule's precision too.
    ``pattern`` is the profile's sentence end (Thai: also the space between two runs of text).
    """
    return sum(map(_has_letter_or_digit, pattern.split(text)))


def _has_sentences(text: str, at_least: int, pattern: re.Pattern[str] = _SENTENCE_SPLIT) -> bool:
    """``count_sentences(text, pattern) >= at_least``, stopping as soon as it is."""
    if at_least <= 0:
        return True
    found = 0
    for piece in pattern.split(text):
        if _has_letter_or_digit(piece):
            found += 1
            if found >= at_least:
                return True
    return False


# ---------------------------------------------------------------------------
# Rules. Each returns True when the document must go.

Rule = Callable[[_Text, FilterConfig], bool]


def _gopher_word_count(t: _Text, c: FilterConfig) -> bool:
    return not c.gopher_min_words <= len(t.ngram_words) <= c.gopher_max_words


def _gopher_mean_word_length(t: _Text, c: FilterConfig) -> bool:
    mean = _ratio(t.word_chars, len(t.ngram_words))
    return not c.gopher_min_mean_word_length <= mean <= c.gopher_max_mean_word_length


def _gopher_symbol_ratio(t: _Text, c: FilterConfig) -> bool:
    symbols = t.text.count("#") + t.text.count("...") + t.text.count("\u2026")
    return _ratio(symbols, len(t.ngram_words)) > c.gopher_max_symbol_word_ratio


def _gopher_bullet_lines(t: _Text, c: FilterConfig) -> bool:
    return _ratio(sum(line.startswith(BULLETS) for line in t.lines), len(t.lines)) > c.gopher_max_bullet_lines_ratio


def _gopher_ellipsis_lines(t: _Text, c: FilterConfig) -> bool:
    ends = sum(line.endswith(("...", "\u2026")) for line in t.lines)
    return _ratio(ends, len(t.lines)) > c.gopher_max_ellipsis_lines_ratio


def _gopher_alpha_words(t: _Text, c: FilterConfig) -> bool:
    # A token has a letter iff its word has one (the stripped edge characters are not letters),
    # and an all-letter word needs no regex: only the few others are searched.
    others = list(filterfalse(str.isalpha, t.ngram_words))
    alpha = len(t.ngram_words) - len(others) + sum(1 for w in others if _LETTER.search(w))
    return _ratio(alpha, len(t.tokens)) < c.gopher_min_alpha_words_ratio


def _gopher_stopwords(t: _Text, c: FilterConfig) -> bool:
    if not c.gopher_min_stopwords:
        return False
    present = c.stopword_set.intersection(t.ngram_words)
    return len(present) < c.gopher_min_stopwords


def _dup_lines(t: _Text, c: FilterConfig) -> bool:
    return _ratio(t.line_dups[0], len(t.lines)) > c.gopher_max_dup_line_ratio


def _dup_line_chars(t: _Text, c: FilterConfig) -> bool:
    return _ratio(t.line_dups[1], sum(map(len, t.lines))) > c.gopher_max_dup_line_char_ratio


def _dup_paragraphs(t: _Text, c: FilterConfig) -> bool:
    return _ratio(t.paragraph_dups[0], len(t.paragraphs)) > c.gopher_max_dup_paragraph_ratio


def _dup_paragraph_chars(t: _Text, c: FilterConfig) -> bool:
    return _ratio(t.paragraph_dups[1], sum(map(len, t.paragraphs))) > c.gopher_max_dup_paragraph_char_ratio


def _top_ngram(n: int) -> Rule:
    field = f"gopher_max_top_{n}gram_char_ratio"

    def rule(t: _Text, c: FilterConfig) -> bool:
        limit = getattr(c, field)
        # An n-gram occurring f times has f <= the count of each of its words, so f x its length
        # <= n x heaviest_word_chars; the same division by the same total keeps that order in floats,
        # so under the limit counting the n-grams cannot change the answer.
        if _ratio(n * t.heaviest_word_chars, t.ngram_chars) <= limit:
            return False
        return top_ngram_char_ratio(t.ngram_words, n) > limit

    return rule


def _dup_ngram(n: int) -> Rule:
    field = f"gopher_max_dup_{n}gram_char_ratio"

    def rule(t: _Text, c: FilterConfig) -> bool:
        # Without a repeated 5-gram there is no repeated n-gram for any n >= 5, and the ratio is 0.
        return t.repeats_5gram and dup_ngram_char_ratio(t.ngram_words, n) > getattr(c, field)

    return rule


def _fineweb_line_punct(t: _Text, c: FilterConfig) -> bool:
    ends = sum(line.endswith(TERMINAL_PUNCTUATION) for line in t.lines)
    return _ratio(ends, len(t.lines)) < c.fineweb_min_line_punct_ratio


def _fineweb_dup_line_chars(t: _Text, c: FilterConfig) -> bool:
    return _ratio(t.line_dups[1], sum(map(len, t.lines))) > c.fineweb_max_dup_line_char_ratio


def _fineweb_short_lines(t: _Text, c: FilterConfig) -> bool:
    short = sum(len(line) <= c.fineweb_short_line_chars for line in t.lines)
    return _ratio(short, len(t.lines)) > c.fineweb_max_short_line_ratio


# (group flag, reason, rule) in the order they run: the first failure names the drop.
DOCUMENT_RULES: list[tuple[str, str, Rule]] = [
    ("gopher_quality", "gopher_word_count", _gopher_word_count),
    ("gopher_quality", "gopher_mean_word_length", _gopher_mean_word_length),
    ("gopher_quality", "gopher_symbol_ratio", _gopher_symbol_ratio),
    ("gopher_quality", "gopher_bullet_lines", _gopher_bullet_lines),
    ("gopher_quality", "gopher_ellipsis_lines", _gopher_ellipsis_lines),
    ("gopher_quality", "gopher_alpha_words", _gopher_alpha_words),
    ("gopher_quality", "gopher_stopwords", _gopher_stopwords),
    # Paragraphs before lines: a repeated paragraph repeats its lines too, so checking
    # lines first would leave the paragraph reasons unreachable.
    ("gopher_repetition", "gopher_dup_paragraphs", _dup_paragraphs),
    ("gopher_repetition", "gopher_dup_paragraph_chars", _dup_paragraph_chars),
    ("gopher_repetition", "gopher_dup_lines", _dup_lines),
    ("gopher_repetition", "gopher_dup_line_chars", _dup_line_chars),
    *[("gopher_repetition", f"gopher_top_{n}gram", _top_ngram(n)) for n in (2, 3, 4)],
    *[("gopher_repetition", f"gopher_dup_{n}gram", _dup_ngram(n)) for n in range(5, 11)],
    ("fineweb", "fineweb_line_punct", _fineweb_line_punct),
    ("fineweb", "fineweb_dup_line_chars", _fineweb_dup_line_chars),
    ("fineweb", "fineweb_short_lines", _fineweb_short_lines),
]
C4_REASONS = ("c4_lorem_ipsum", "c4_curly_bracket", "c4_too_few_sentences")
REASONS = tuple(reason for _, reason, _ in DOCUMENT_RULES) + C4_REASONS


def _has_words(line: str, at_least: int) -> bool:
    """``len(line.split()) >= at_least`` without splitting a long line to the end."""
    return at_least <= 0 or len(line.split(None, at_least - 1)) >= at_least


def _keep_line(line: str, cfg: FilterConfig, boilerplate_possible: bool = True) -> bool:
    """C4's line rules: terminal punctuation, enough words, no javascript or policy boilerplate.

    ``boilerplate_possible=False`` says the whole text contains neither "javascript" nor a
    policy phrase (in any case), so no line can, and skips looking.
    """
    if cfg.c4_drop_lines_without_terminal_punct and not line.endswith(TERMINAL_PUNCTUATION):
        return False
    if not _has_words(cfg.segmenter.spaced(line) if cfg.segmenter.splits_text else line, cfg.c4_min_words_per_line):
        return False
    if not boilerplate_possible:
        return True
    lower = line.lower()
    if cfg.c4_drop_javascript_lines and "javascript" in lower:
        return False
    return not (cfg.c4_drop_policy_lines and any(phrase in lower for phrase in cfg.policy_phrases))


def c4_filter(text: str, cfg: FilterConfig) -> tuple[str, str | None]:
    """Apply the C4 rules: ``(text with bad lines removed, None)`` or ``(text, reason)`` to drop.

    Blank lines survive as paragraph breaks (runs of them collapse to one), so the
    paragraph structure of what is kept does not change.

    Example::

        c4_filter("Menu\\nTrang chủ\\nMột câu đủ dài. Câu thứ hai cũng vậy.", cfg)
        # -> ("Một câu đủ dài. Câu thứ hai cũng vậy.", "c4_too_few_sentences") with c4_min_sentences=5
    """
    lower = text.lower()
    if cfg.c4_drop_lorem_ipsum and "lorem ipsum" in lower:
        return text, "c4_lorem_ipsum"
    if cfg.c4_drop_curly_bracket and "{" in text:
        return text, "c4_curly_bracket"
    body = text
    if cfg.c4_remove_citations and "[" in text:
        body = _CITATION.sub("", text)  # a marker never spans lines: once over the text = once per line
        lower = body.lower()
    # A line's lowercase is a piece of the text's lowercase, so a phrase absent from the whole is
    # absent from every line.
    boilerplate = (cfg.c4_drop_javascript_lines and "javascript" in lower) or (
        cfg.c4_drop_policy_lines and any(phrase in lower for phrase in cfg.policy_phrases)
    )
    kept: list[str] = []
    for raw in body.split("\n"):
        line = raw.strip()
        if not line:
            if kept and kept[-1]:
                kept.append("")
        elif _keep_line(line, cfg, boilerplate):
            kept.append(line)
    new_text = "\n".join(kept).strip()
    if not _has_sentences(new_text, cfg.c4_min_sentences, cfg.language_profile.sentence_pattern):
        return new_text, "c4_too_few_sentences"
    return new_text, None


def quality_reason(text: str, cfg: FilterConfig) -> tuple[str | None, str]:
    """Why ``text`` would be dropped (a reason from :data:`REASONS`, or None) and the text kept.

    Useful in a notebook to ask about one document: ``quality_reason(doc.text, cfg)[0]``.
    """
    stats = _Text(text, cfg.segmenter)
    for group, reason, rule in DOCUMENT_RULES:
        if getattr(cfg, group) and rule(stats, cfg):
            return reason, text
    if cfg.c4:
        new_text, reason = c4_filter(text, cfg)
        return reason, new_text
    return None, text


def filter_documents(docs: Iterable[Document], cfg: FilterConfig, drops: DropCounter) -> Iterator[Document]:
    """Yield the documents that pass every rule, C4-edited; count each dropped one once.

    A dropped document is counted as ``drops.drop(doc.source, reason, len(doc.text))``
    with the first failing rule as reason. A kept document whose text C4 edited
    comes back as a new Document (same source, id and meta; ``tokens`` cleared).
    """
    if not cfg.enabled:
        yield from docs
        return
    for doc in docs:
        reason, text = quality_reason(doc.text, cfg)
        if reason is not None:
            drops.drop(doc.source, reason, len(doc.text))
        elif text == doc.text:
            yield doc
        else:
            yield Document(text=text, source=doc.source, id=doc.id, meta=doc.meta)
