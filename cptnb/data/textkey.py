"""How documents are normalized and hashed for dedup and decontamination.

Words are compared after NFC, lowercasing and turning punctuation and symbols into
spaces, with scripts written without spaces segmented first (Thai by PyThaiNLP, others by
character bigrams: :func:`cptnb.data.languages.segment.script_spaced`; text without such
scripts is unchanged); a word is a 64-bit xxh3 hash, and a run of words a position-weighted mix
of its word hashes that depends only on the words and their order.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

import numpy as np
import xxhash

from cptnb.data.languages.segment import script_spaced

_U64 = np.uint64
_MASK64 = (1 << 64) - 1


@functools.lru_cache(maxsize=1)
def _separator_pattern() -> re.Pattern[str]:
    """Punctuation, symbols and non-ASCII spaces of the BMP: every such code point separates words.

    Built once from the Unicode tables (a few ms) rather than ``[^\\w\\s]``, which
    would also split off the combining marks of scripts that NFC does not compose.
    Non-ASCII spaces are included so that ``bytes.split()`` afterwards equals
    ``str.split()``. Only BMP code points: ``re`` turns such a class into a fast
    bitmap, while astral ranges would make it ~25x slower (see ``_astral``).
    """
    ascii_space = set(" \t\n\r\x0b\x0c")
    points = [
        cp for cp in range(0x10000)
        if unicodedata.category(chr(cp))[0] in "PS" or (chr(cp).isspace() and chr(cp) not in ascii_space)
    ]
    ranges, start = [], points[0]
    for prev, cur in zip(points, points[1:] + [-1]):
        if cur != prev + 1:  # a run of consecutive code points ends at prev
            ranges.append(re.escape(chr(start)) + ("" if start == prev else "-" + re.escape(chr(prev))))
            start = cur
    return re.compile("[" + "".join(ranges) + "]+")


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def _astral(match: re.Match[str]) -> str:
    """Emoji and other astral symbols/punctuation become spaces; astral letters stay."""
    return " " if unicodedata.category(match.group())[0] in "PS" else match.group()


def normalized_words(text: str) -> list[bytes]:
    """The words of ``text`` after NFC, lowercasing, and punctuation/symbols turned into spaces (UTF-8)."""
    text = _separator_pattern().sub(" ", script_spaced(unicodedata.normalize("NFC", text)).lower())
    if _ASTRAL.search(text):  # rare: emoji, historic scripts
        text = _ASTRAL.sub(_astral, text)
    return text.encode("utf-8").split()


def normalize_text(text: str) -> str:
    """NFC, lowercase, punctuation and symbols removed, whitespace collapsed.

    Example: ``normalize_text("Xin  CHÀO, bạn!") == "xin chào bạn"``.
    """
    return b" ".join(normalized_words(text)).decode("utf-8")


def word_hashes(text: str) -> np.ndarray:
    """64-bit xxh3 hash of each normalized word, shape (words,), dtype uint64."""
    words = normalized_words(text)
    return np.fromiter(map(xxhash.xxh3_64_intdigest, words), dtype=_U64, count=len(words))


def _splitmix64(seed: int, count: int) -> np.ndarray:
    """``count`` pseudo-random 64-bit values from ``seed``; plain integer arithmetic, so stable everywhere."""
    out, state = [], seed & _MASK64
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        out.append(z ^ (z >> 31))
    return np.array(out, dtype=_U64)


@functools.lru_cache(maxsize=8)
def _position_coefficients(count: int) -> np.ndarray:
    """Odd multipliers for word positions 0..count-1 (odd: each position's term is a bijection).

    A prefix of a longer list is the shorter list, so a 13-gram sum extends a 12-gram sum.
    """
    return _splitmix64(0xC0FFEE, max(count, 64)) | _U64(1)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, in place: breaks the linearity of the position-weighted sum.

    Array arithmetic on uint64 wraps modulo 2**64 silently, as hashing wants
    (only NumPy *scalar* overflow warns, so no scalar-scalar products here).
    """
    x ^= x >> _U64(30)
    x *= _U64(0xBF58476D1CE4E5B9)
    x ^= x >> _U64(27)
    x *= _U64(0x94D049BB133111EB)
    x ^= x >> _U64(31)
    return x


def gram_hashes_by_length(hashes: np.ndarray, lengths: Iterable[int]) -> dict[int, np.ndarray]:
    """For each length L, the hash of every run of L consecutive words, shape (words - L + 1,).

    ``hashes`` are word hashes (:func:`word_hashes`). Equal word sequences give
    equal hashes whatever document they come from, and the length is part of the
    hash, so a 12-gram never equals a 13-gram. The sums are built incrementally,
    so asking for lengths 8..13 costs about as much as 13 alone.
    """
    wanted = sorted({length for length in lengths if 0 < length <= len(hashes)})
    if not wanted:
        return {}
    coef = _position_coefficients(wanted[-1])
    acc = np.zeros(len(hashes), dtype=_U64)  # acc[j] = position-weighted sum of the `length` words from j
    sums = []
    for length in range(1, wanted[-1] + 1):  # wraps modulo 2**64, as hashing wants
        count = len(hashes) - length + 1
        acc = acc[:count]
        acc += hashes[length - 1 : length - 1 + count] * coef[length - 1]
        if length in wanted:
            sums.append(acc + _U64(length * 0x9E3779B97F4A7C15 & _MASK64))
    mixed = _mix(np.concatenate(sums))  # one pass for all lengths: per-call overhead is the cost here
    return dict(zip(wanted, np.split(mixed, np.cumsum([len(x) for x in sums[:-1]]))))


def gram_hashes(hashes: np.ndarray, length: int) -> np.ndarray:
    """Hash of every run of ``length`` consecutive words (see :func:`gram_hashes_by_length`)."""
    return gram_hashes_by_length(hashes, [length]).get(length, np.empty(0, dtype=_U64))
