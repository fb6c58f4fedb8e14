"""cptnb: notebook-first continued pretraining."""

__version__ = "0.1.0"
