"""Evaluation: held-out perplexity / bits per byte, generation spot-checks, before/after reports."""

from cptnb.evaluate.generate import generate
from cptnb.evaluate.perplexity import HeldoutScore, score_texts

__all__ = ["HeldoutScore", "score_texts", "generate"]
