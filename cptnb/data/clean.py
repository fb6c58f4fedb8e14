"""Minimal, safe text cleaning: mojibake repair, Unicode NFC, control/zero-width characters, whitespace.

Mojibake ("Tiáº¿ng Viá»‡t": UTF-8 bytes once decoded as Windows-1252) is common
in scraped Vietnamese; ``ftfy.fix_encoding`` undoes it and leaves correct text
untouched.

Vietnamese text arrives both precomposed ("ệ" as one code point) and decomposed
("e" + two combining marks); NFC makes the two byte-identical, which matters for
tokenization, deduplication and decontamination alike.

Speed: ftfy only changes a text that its mojibake detector (``ftfy.badness.is_bad``)
flags, and that detector is a regular expression of ~40 alternatives tried at every
character, half of this stage's time on Vietnamese. :func:`may_have_mojibake` is a
cheaper test that is true for every text the detector flags (built from ftfy's own
character classes), so ftfy runs only on those and the result is the same.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Iterator

import ftfy

from cptnb.data.documents import Document, DropCounter

log = logging.getLogger(__name__)

# Zero-width characters, soft hyphen, C0/C1 controls except \t and \n: removed in one pass.
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
# Most texts only have single " ": then _SPACES would replace each of their hundreds of spaces by
# itself (most of this stage's time), so it runs only on texts with a double space or another space.
_ODD_SPACE = re.compile(r"[\t\u00a0\u2000-\u200a\u202f\u205f\u3000]")
_MANY_NEWLINES = re.compile(r"\n{3,}")
_SURROGATE = re.compile("[\ud800-\udfff]")

# The ftfy release whose detector the pre-check was derived from and tested against.
_PRECHECKED_FTFY = "6.3."


def _mojibake_precheck() -> re.Pattern[str] | None:
    """A pattern that matches wherever ftfy's ``BADNESS_RE`` can (and more), or None for an unknown ftfy.

    Every alternative of ftfy's detector either contains a character that clean
    Vietnamese never uses (C1 controls, "bad" symbols, currency, math, box drawing,
    Greek, Cyrillic, Œ Î Ð ‚) or is one of a few short sequences of accented letters
    and quotation marks, listed below in a looser form. The pattern starts at rare
    characters only, so the regex engine skips plain text quickly.
    """
    if not ftfy.__version__.startswith(_PRECHECKED_FTFY):
        log.info("ftfy %s is not the tested %sx: running its repair on every text", ftfy.__version__, _PRECHECKED_FTFY)
        return None
    from ftfy.badness import MOJIBAKE_CATEGORIES as cat

    rare = "".join(cat[k] for k in ("c1", "bad", "law", "currency", "numeric", "box", "lower_common", "upper_common"))
    la, ua = cat["lower_accented"], cat["upper_accented"]
    opening, closing = cat["start_punctuation"], cat["end_punctuation"]
    # Each branch names where the match starts by the character just consumed (lookbehind), so the
    # whole pattern starts with one character class and the engine jumps between its rare members.
    conditions = [
        f"(?<=[{rare}\u0152\u0153\u00ce\u00d0\u201a])",  # Œ œ Î Ð ‚ start alternatives of their own
        f"(?<=[{la}{closing}][{ua}])",
        f"(?<=[{closing}])[{la}{opening}]",
        f"(?<=[{ua}])[{opening}\u00b0]",
        rf"(?<=[{la}{ua}][{opening}{closing}])\w",
        "(?<=[\u00c2\u00c3])[^A-Za-z0-9]",  # Â Ã before a space or a symbol
        "(?<=[\u00d8\u00d9])[^\x00-\x7f]",  # Ø Ù before a non-ASCII character
    ]
    first = f"[{rare}\u0152\u0153\u00ce\u00d0\u201a{ua}{opening}{closing}\u00c2\u00c3\u00d8\u00d9]"
    return re.compile(first + "(?:" + "|".join(conditions) + ")")


_MAYBE_MOJIBAKE = _mojibake_precheck()


def may_have_mojibake(text: str) -> bool:
    """False only when ``ftfy.fix_encoding(text)`` would return ``text`` unchanged.

    Pure ASCII and ordinary Vietnamese, English or French prose give False in a
    fraction of the time ftfy's own check takes; True means "let ftfy decide".
    """
    if _MAYBE_MOJIBAKE is None:
        return True
    return not text.isascii() and _MAYBE_MOJIBAKE.search(text) is not None


def clean_text(text: str) -> str:
    """Mojibake repaired, NFC, no control or zero-width characters, single spaces, at most one blank line.

    Lone UTF-16 surrogates (invalid in any encoding) become U+FFFD.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.isascii():  # ASCII needs neither repair nor NFC
        if _SURROGATE.search(text):  # a lone "\ud800" from JSON cannot be written as UTF-8 or classified
            text = _SURROGATE.sub("\ufffd", text)
        if may_have_mojibake(text):
            text = ftfy.fix_encoding(text)
        text = unicodedata.normalize("NFC", text)
    text = _INVISIBLE.sub("", text)
    if "  " in text or _ODD_SPACE.search(text):
        text = _SPACES.sub(" ", text)  # never matches "\n": one substitution equals one per line
    lines = [line.strip() for line in text.split("\n")]
    text = "\n".join(lines)
    return (_MANY_NEWLINES.sub("\n\n", text) if "\n\n\n" in text else text).strip()


def clean_documents(
    docs: Iterable[Document], min_chars: int = 20, drops: DropCounter | None = None
) -> Iterator[Document]:
    """Clean each document; drop (and count as ``too_short``) those under ``min_chars``."""
    drops = drops if drops is not None else DropCounter()
    for doc in docs:
        text = clean_text(doc.text)
        if len(text) < min_chars:
            drops.drop(doc.source, "too_short", len(doc.text))
            continue
        yield Document(text=text, source=doc.source, id=doc.id, meta=doc.meta)
