"""The shipped sample data meets what the notebooks and the tests rely on."""

import json
import unicodedata
from collections import Counter

import pytest

from cptnb.paths import data_samples_dir

ROOT = data_samples_dir()


def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_vietnamese_corpus_size_and_genres():
    docs = [d for p in sorted((ROOT / "vi").glob("*.jsonl")) for d in _jsonl(p)]
    assert len(docs) >= 150
    assert sum(len(d["text"].split()) for d in docs) >= 40_000
    assert set(Counter(d["genre"] for d in docs)) >= {"news", "encyclopedic", "everyday"}
    assert len({d["id"] for d in docs}) == len(docs)
    assert all(unicodedata.is_normalized("NFC", d["text"]) for d in docs)


@pytest.mark.parametrize("name", ["vi_heldout.jsonl", "en_heldout.jsonl"])
def test_heldout_sets_exist_and_do_not_overlap_training(name):
    heldout = _jsonl(ROOT / "heldout" / name)
    assert len(heldout) >= 15
    train_texts = {d["text"] for p in ROOT.glob("*/*.jsonl") if p.parent.name in ("vi", "en") for d in _jsonl(p)}
    assert not train_texts & {d["text"] for d in heldout}


def test_english_replay_set():
    docs = _jsonl(ROOT / "en" / "general.jsonl")
    assert len(docs) >= 50 and all(d["text"].strip() for d in docs)
