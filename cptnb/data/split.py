"""Hold documents out by the hash of their text: stable across runs, machines and corpus order.

A document goes to the held-out side when ``hash(salt + NFC text)`` falls below
``share``. Adding documents to a corpus never moves an existing one from one
side to the other, and the split happens before packing, so no held-out text
can reach a training block.
"""

from __future__ import annotations

import hashlib
import unicodedata
from typing import Iterable, Iterator

from cptnb.data.documents import Document


def heldout_score(text: str, salt: str = "cptnb") -> float:
    """A number in [0, 1) derived from the text alone."""
    digest = hashlib.sha1((salt + unicodedata.normalize("NFC", text)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_heldout(docs: Iterable[Document], share: float, salt: str = "cptnb") -> Iterator[tuple[Document, bool]]:
    """Yield ``(doc, is_heldout)``; about ``share`` of the documents are held out."""
    if not 0 <= share < 1:
        raise ValueError(f"held-out share must be in [0, 1), got {share}")
    for doc in docs:
        yield doc, heldout_score(doc.text, salt) < share
