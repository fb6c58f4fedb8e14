"""The fast quality filters decide exactly as the original code did: same reason, same C4-edited text.

The original rules are frozen in ``_data_reference.py``. Documents come from the shipped
samples and from a seeded generator that mixes clean prose with every kind of defect
the rules look for, under several configurations (some with limits so tight that the
shortcuts cannot decide and the exact computation must run).
"""

from __future__ import annotations

import json
import random
import re

import _data_reference as original
import pytest

from cptnb.data import filters
from cptnb.data.filters import FilterConfig, quality_reason
from cptnb.paths import data_samples_dir

CONFIGS = {
    "vi": FilterConfig.for_language("vi"),
    "en": FilterConfig.for_language("en"),
    # Every bound inconclusive: the exact n-gram counts run on every document.
    "tight": FilterConfig.for_language(
        "vi",
        gopher_min_words=5,
        gopher_min_stopwords=0,
        gopher_max_top_2gram_char_ratio=0.001,
        gopher_max_top_3gram_char_ratio=0.001,
        gopher_max_top_4gram_char_ratio=0.001,
        gopher_max_dup_paragraph_ratio=1.0,
        gopher_max_dup_paragraph_char_ratio=1.0,
        gopher_max_dup_line_ratio=1.0,
        gopher_max_dup_line_char_ratio=1.0,
    ),
    # Quality and repetition off: only FineWeb and C4 decide, with every C4 option on.
    "c4": FilterConfig.for_language(
        "vi", gopher_quality=False, gopher_repetition=False, fineweb=False, c4_drop_curly_bracket=True,
        c4_min_words_per_line=5, c4_min_sentences=3,
    ),
    "c4_lenient": FilterConfig.for_language(
        "vi", gopher_quality=False, gopher_repetition=False, c4_min_words_per_line=0, c4_min_sentences=0,
        c4_drop_lines_without_terminal_punct=False, c4_remove_citations=False,
    ),
}


def _sample_texts() -> list[str]:
    texts = []
    for path in sorted(data_samples_dir().rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            texts += [item[k] for k in ("text", "question", "passage", "context") if isinstance(item.get(k), str)]
    return texts


SAMPLES = _sample_texts()
SENTENCES = [s for t in SAMPLES for s in re.split(r"(?<=[.!?])\s+", t) if len(s.split()) >= 4]
ODDITIES = [
    "#tag", "...", "…", "• điểm", "- gạch", "* sao", "[1]", "[edit]", "[cần dẫn nguồn]", "javascript",
    "Privacy Policy", "chính sách bảo mật", "lorem ipsum", "{x}", "12.000", "3,5%", "—", "ΟΔΟΣ.", "ΣΟΦΟΣ'",
    "İstanbul", "Σ", "ß", "ﬁ", "ǅ", "Ⅻ", "e-mail", "“trích”", "'a'", "Đà Nẵng", "hà nội", "HÀ NỘI",
]


def _generated(seed: int, count: int) -> list[str]:
    """Documents built from real sentences with repetitions, lists, symbols and boilerplate mixed in."""
    rng = random.Random(seed)
    docs = []
    for _ in range(count):
        sentences = rng.sample(SENTENCES, rng.randint(1, 14))
        if rng.random() < 0.4:  # repeat a run of sentences, or one sentence many times
            start = rng.randrange(len(sentences))
            sentences += sentences[start : start + rng.randint(1, 3)] * rng.randint(1, 4)
        words = " ".join(sentences).split(" ")
        for _ in range(rng.choice([0, 0, 1, 3, 10])):
            words.insert(rng.randrange(len(words) + 1), rng.choice(ODDITIES))
        if rng.random() < 0.2:  # a repeated short phrase ("ha ha ha")
            words += [rng.choice(words)] * rng.randint(2, 30)
        lines, i = [], 0
        while i < len(words):
            n = rng.choice([2, 4, 8, 15, 30, 60])
            line = " ".join(words[i : i + n])
            lines.append(rng.choice(["", "", "• ", "- "]) + line + rng.choice(["", "", "...", ".", " :"]))
            i += n
        if rng.random() < 0.3:  # repeated lines
            lines += rng.sample(lines, min(len(lines), rng.randint(1, 3)))
        text = ""
        for line in lines:
            text += line + rng.choice(["\n", "\n", "\n\n", "\n \n", "\n\n\n"])
        if rng.random() < 0.1:  # the whole text again, as further paragraphs
            text = "\n\n".join([text.strip()] * rng.randint(2, 3))
        docs.append(text.upper() if rng.random() < 0.05 else text)
    return docs


DOCS = SAMPLES + _generated(seed=1, count=400)


@pytest.fixture(scope="module")
def expected() -> dict[str, list[tuple[str | None, str]]]:
    """The original code's (reason, text) for every document under every configuration."""
    return {name: [original.quality_reason(text, cfg) for text in DOCS] for name, cfg in CONFIGS.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_same_decision_and_text_as_the_original_code(name, expected):
    cfg = CONFIGS[name]
    differ = [text[:80] for text, want in zip(DOCS, expected[name]) if quality_reason(text, cfg) != want]
    assert differ == []


@pytest.mark.slow
def test_the_generated_documents_reach_every_kind_of_decision(expected):
    reasons = {reason for results in expected.values() for reason, _ in results}
    # Not a tautology: without these the equivalence test above would leave rules unexercised.
    for wanted in (None, "gopher_word_count", "gopher_stopwords", "gopher_dup_paragraphs", "gopher_dup_lines",
                     "gopher_top_2gram", "gopher_dup_5gram", "fineweb_line_punct", "gopher_bullet_lines",
                     "c4_too_few_sentences", "c4_lorem_ipsum", "c4_curly_bracket"):
        assert wanted in reasons, wanted


def test_shortcuts_skip_the_ngram_counts_on_ordinary_prose(monkeypatch):
    calls = []
    for name in ("top_ngram_char_ratio", "dup_ngram_char_ratio"):
        real = getattr(filters, name)
        monkeypatch.setattr(filters, name, lambda words, n, real=real, name=name: calls.append(name) or real(words, n))
    cfg = CONFIGS["vi"]
    vi_samples = data_samples_dir() / "vi"
    docs = [json.loads(line)["text"] for p in sorted(vi_samples.glob("*.jsonl")) for line in p.open(encoding="utf-8")]
    prose = ["\n\n".join(docs[i : i + 3]) for i in range(0, len(docs) - 2, 3)]  # ~1,000 words each
    assert len(prose) > 50 and all(quality_reason(t, cfg)[0] is None for t in prose)

    def repeats_a_5gram(text: str) -> bool:
        words = [w.lower() for w in (t.strip(filters._EDGE_PUNCT) for t in text.split()) if w]
        grams = list(zip(*(words[i:] for i in range(5))))
        return len(set(grams)) < len(grams)

    repeating = sum(map(repeats_a_5gram, prose))
    assert 0 < repeating < len(prose) / 2
    # The bound on the most frequent 2/3/4-gram decides nearly always (3 rules per document); the six
    # duplicated-n-gram rules (5..10) run exactly on the documents that repeat a 5-gram at all.
    assert calls.count("top_ngram_char_ratio") <= 0.05 * 3 * len(prose)
    assert calls.count("dup_ngram_char_ratio") == 6 * repeating


@pytest.mark.slow
def test_lowercasing_whole_texts_is_safe_for_every_code_point():
    """What _Text relies on to take words from the lowercased text (see its docstring)."""
    chars = [chr(cp) for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]
    lows = [c.lower() for c in chars]
    assert [c for c, low in zip(chars, lows) if len(low) != 1] == ["\u0130"]  # only "İ" grows; word_chars handles it
    assert "\u0130".lower() == "i\u0307"  # ... into a letter and a combining mark: still a letter, no space
    lows = [low if len(low) == 1 else "i" for low in lows]
    letter = re.compile(r"[^\W\d_]")
    is_letter = {m.start() for m in letter.finditer("".join(chars))}
    assert is_letter == {m.start() for m in letter.finditer("".join(lows))}
    assert [c for c, low in zip(chars, lows) if low.isspace() != c.isspace()] == []
    edge = set(filters._EDGE_PUNCT)
    assert [c for c, low in zip(chars, lows) if (low in edge) != (c in edge)] == []
    assert not letter.search(filters._EDGE_PUNCT)  # so stripping them never removes a letter
