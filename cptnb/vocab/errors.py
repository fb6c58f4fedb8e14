"""The error vocabulary extension raises for input a user can fix."""

from __future__ import annotations

from cptnb.errors import CptnbError


class VocabError(CptnbError):
    """A tokenizer, model, corpus or adapter that cannot be extended or loaded as asked; the message says what to change."""
