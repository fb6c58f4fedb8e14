"""The recipe's vocabulary-extension settings: ``model.vocab`` (a nested section of ModelConfig)."""

from __future__ import annotations

from dataclasses import dataclass

from cptnb.configbase import Section, choice, option, positive
from cptnb.vocab.init import INIT_METHODS

STAGE_ROWS = ("new", "all")


@dataclass
class VocabConfig(Section):
    """Tokens learned from the domain corpus and added to the vocabulary, and how their rows start and train."""

    new_tokens: int = option(0, "Tokens to learn from the domain corpus and add to the vocabulary; 0 keeps the base vocabulary.")
    min_frequency: int = option(2, "A merge must occur at least this many times in the corpus to become a token.")
    init: str = option("mean_of_pieces", "New embedding rows start as mean_of_pieces (of the old tokens they replace), global_mean or random.")
    pad_to_multiple_of: int = option(64, "Embedding rows are padded to a multiple of this (GPU-friendly); padding ids are never produced.")
    embedding_stage_steps: int = option(0, "Optimizer steps that train only the embeddings before LoRA + embeddings; 0 skips that stage.")
    embedding_stage_rows: str = option("new", "Rows the embeddings-only stage trains: new (the added tokens) or all.")

    def problems(self) -> list[str]:
        p: list[str] = []
        positive(p, "new_tokens", self.new_tokens, allow_zero=True)
        positive(p, "min_frequency", self.min_frequency)
        choice(p, "init", self.init, INIT_METHODS)
        positive(p, "pad_to_multiple_of", self.pad_to_multiple_of)
        positive(p, "embedding_stage_steps", self.embedding_stage_steps, allow_zero=True)
        choice(p, "embedding_stage_rows", self.embedding_stage_rows, STAGE_ROWS)
        for name in ("new_tokens", "min_frequency", "pad_to_multiple_of", "embedding_stage_steps"):
            if not isinstance(getattr(self, name), int):
                p.append(f"{name} must be an integer, got {getattr(self, name)!r}")
        return p


def extension_problems(model_cfg) -> list[str]:
    """Problems between ``model.vocab`` and the rest of ModelConfig (called from ModelConfig.problems)."""
    vocab = getattr(model_cfg, "vocab", None)
    if not isinstance(vocab, VocabConfig) or not (vocab.new_tokens or vocab.embedding_stage_steps):
        return []
    p: list[str] = []
    if model_cfg.method != "full" and not model_cfg.train_embeddings:
        p.append("vocab.new_tokens / vocab.embedding_stage_steps need train_embeddings: true with LoRA "
                 "(new rows must train, and the adapter must carry the resized embeddings)")
    return p
