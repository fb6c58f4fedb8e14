"""The issue's fertility goals on the real SmolLM2-135M tokenizer and the sample corpus (tokenizer only)."""

from __future__ import annotations

import json

import pytest

from cptnb.paths import data_samples_dir


def _texts(*parts: str) -> list[str]:
    path = data_samples_dir().joinpath(*parts)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    return [json.loads(line)["text"] for f in files for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.slow
def test_smollm2_vietnamese_gets_30_percent_cheaper_and_english_stays_the_same():
    from cptnb.config import ModelConfig
    from cptnb.models.loading import load_tokenizer
    from cptnb.vocab import extend_tokenizer, extension_report, learn_extension

    tokenizer = load_tokenizer(ModelConfig(name="smollm2-135m"))
    ext = learn_extension(tokenizer, _texts("vi"), 1000)
    extended = extend_tokenizer(tokenizer, ext)
    english = _texts("en") + _texts("heldout", "en_heldout.jsonl")
    report = extension_report(tokenizer, extended, {"vi": _texts("heldout", "vi_heldout.jsonl"), "en": english},
                              general="en", first_new_id=ext.base_size)
    vi, en = report["corpora"]["vi"], report["corpora"]["en"]
    assert vi["before"]["tokens_per_word"] > 3.4 and vi["after"]["tokens_per_word"] <= 2.5  # held-out text
    assert abs(en["tokens_per_word_change"]) <= 0.01
    assert all(extended.decode(extended(t, add_special_tokens=False)["input_ids"]) == t for t in english[:20])
