"""Minimal, safe text cleaning: mojibake repair, Unicode NFC, control/zero-width characters, whitespace.

Mojibake ("Tiáº¿ng Viá»‡t": UTF-8 bytes once decoded as Windows-1252) is common
in scraped Vietnamese; ``ftfy.fix_encoding`` undoes it and leaves correct text
untouched.

Vietnamese text arrives both precomposed ("ệ" as one code point) and decomposed
("e" + two combining marks); NFC makes the two byte-identical, which matters for
tokenization, deduplication and decontamination alike.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Iterator

import ftfy

from cptnb.data.documents import Document, DropCounter

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """Mojibake repaired, NFC, no control or zero-width characters, single spaces, at most one blank line."""
    text = ftfy.fix_encoding(text.replace("\r\n", "\n").replace("\r", "\n"))
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub("", text.translate(_ZERO_WIDTH))
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _MANY_NEWLINES.sub("\n\n", "\n".join(lines)).strip()


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
