"""Evaluation: held-out perplexity / bits per byte, generation spot-checks, before/after reports."""

from cptnb.evaluate.perplexity import HeldoutScore, score_texts
from cptnb.evaluate.generate import generate

__all__ = ["HeldoutScore", "score_texts", "generate"]
