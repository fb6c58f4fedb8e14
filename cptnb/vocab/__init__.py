"""Vocabulary extension: new tokens learned from the corpus, their embedding rows, training and reports.

learn (tokens and merges) -> init (resize, initialise rows) -> extend (the whole step, written to disk)
-> stage (embeddings-only first stage, new-rows check) -> report (fertility before and after).
"""

from cptnb.vocab.adapter import fit_base_to_adapter
from cptnb.vocab.config import VocabConfig
from cptnb.vocab.errors import VocabError
from cptnb.vocab.extend import ExtensionResult, extend_vocabulary
from cptnb.vocab.init import INIT_METHODS, resize_and_init
from cptnb.vocab.learn import VocabExtension, extend_tokenizer, learn_extension
from cptnb.vocab.report import extension_report, fertility, report_markdown

__all__ = [
    "VocabConfig", "VocabError", "ExtensionResult", "extend_vocabulary", "fit_base_to_adapter", "INIT_METHODS",
    "resize_and_init", "VocabExtension", "extend_tokenizer", "learn_extension", "extension_report", "fertility",
    "report_markdown",
]
