"""What a learner sees while held-out text is scored: one progress bar per measurement, not one per document."""

from __future__ import annotations

import tqdm.auto

from cptnb.config import EvalConfig
from cptnb.evaluate import heldout, perplexity


def test_held_out_scoring_shows_one_bar_per_measured_set(tiny, vi_docs, monkeypatch):
    shown: list[str] = []
    real = tqdm.auto.tqdm

    def counting(*args, **kwargs):
        if not kwargs.get("disable"):
            shown.append(kwargs.get("desc", ""))
        return real(*args, **kwargs)

    monkeypatch.setattr(heldout, "tqdm", counting)
    monkeypatch.setattr(perplexity, "tqdm", counting)
    loaded = tiny(method="full")
    texts = [d.text for d in vi_docs[:5]]
    result = heldout.measure(loaded.model, loaded.tokenizer, {"domain": texts, "general": texts[:3]}, EvalConfig())
    assert [len(result["heldout"][name]["items"]) for name in ("domain", "general")] == [5, 3]
    assert shown == ["held-out domain", "held-out general"]
