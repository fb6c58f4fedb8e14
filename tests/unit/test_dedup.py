import importlib.util
import random
import sys
import unicodedata

import numpy as np
import pytest

from cptnb.data.dedup import (
    DedupConfig,
    Deduplicator,
    DedupStats,
    KeyIndex,
    dedup_documents,
    make_signer,
)
from cptnb.data.documents import Document, DropCounter
from cptnb.data.textkey import normalize_text
from cptnb.errors import ConfigError

# Vietnamese-like syllables: onset + vowel (with tone mark) + coda.
ONSETS = ["", "b", "c", "ch", "d", "đ", "g", "gi", "h", "kh", "l", "m", "n", "ng", "nh", "ph", "qu", "s", "t", "th"]
VOWELS = [
    "a", "à", "á", "ả", "ạ", "ă", "ắ", "â", "ầ", "e", "é", "ê", "ế", "ệ",
    "i", "í", "o", "ó", "ô", "ố", "ơ", "ờ", "u", "ú", "ư", "ừ", "y",
]
CODAS = ["", "", "c", "ch", "m", "n", "ng", "nh", "p", "t", "i", "o", "u"]

BACKENDS = ["numpy"] + (["rensa"] if importlib.util.find_spec("rensa") else [])


def _vocabulary(rng, size=2500):
    words = set()
    while len(words) < size:
        words.add(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS))
    return sorted(words)


def _edit(rng, words, vocabulary, rate):
    """Substitute, insert or delete about ``rate`` of the words."""
    words = list(words)
    for _ in range(max(1, round(rate * len(words)))):
        i, op = rng.randrange(len(words)), rng.randrange(3)
        if op == 0:
            words[i] = rng.choice(vocabulary)
        elif op == 1:
            words.insert(i, rng.choice(vocabulary))
        else:
            del words[i]
    return words


@pytest.fixture(scope="module")
def planted():
    """Originals, near copies (5-10% of words edited) and related-but-distinct documents sharing 25%.

    Returns the documents in stream order and the ids of the planted near duplicates.
    """
    rng = random.Random(1309)
    vocabulary = _vocabulary(rng)
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]  # Zipf-like, as in real text
    originals = [rng.choices(vocabulary, weights, k=rng.randint(150, 350)) for _ in range(300)]
    stream = [("orig", i, words) for i, words in enumerate(originals)]
    for i in rng.sample(range(300), 100):
        copy = _edit(rng, originals[i], vocabulary, rng.uniform(0.05, 0.10))
        stream.insert(rng.randint(stream.index(("orig", i, originals[i])) + 1, len(stream)), ("near", i, copy))
    for i in rng.sample(range(300), 50):
        quarter = originals[i][: len(originals[i]) // 4]
        related = quarter + rng.choices(vocabulary, weights, k=len(originals[i]) - len(quarter))
        stream.append(("related", i, related))
    docs = [Document(" ".join(words).capitalize() + ".", "vi", id=f"{kind}-{i}") for kind, i, words in stream]
    return docs, {d.id for d in docs if d.id.startswith("near")}


def _ids(docs):
    return [d.id for d in docs]


@pytest.mark.parametrize("backend", BACKENDS)
def test_planted_near_duplicates_are_found_with_high_recall_and_precision(planted, backend):
    docs, near_ids = planted
    drops = DropCounter()
    dedup = Deduplicator(DedupConfig(backend=backend), drops)
    kept = _ids(dedup(docs))
    dropped = set(_ids(docs)) - set(kept)
    recall = len(dropped & near_ids) / len(near_ids)
    precision = len(dropped & near_ids) / len(dropped)
    assert recall >= 0.9, recall
    assert precision >= 0.95, precision
    assert all(i in kept for i in _ids(docs) if i.startswith("orig"))  # every distinct original survives
    assert sum(i.startswith("related") for i in kept) >= 48  # sharing a quarter of the text is not a duplicate
    assert drops.by_reason() == {"near_duplicate": len(dropped)}
    assert dedup.stats.near_duplicates == len(dropped) and dedup.stats.exact_duplicates == 0
    assert dedup.stats.backend.startswith(backend)


def test_order_is_preserved_and_every_document_is_accounted_for(planted):
    docs, _ = planted
    drops, stats = DropCounter(), DedupStats()
    extra = [
        Document(docs[3].text.upper(), "web", id="exact-copy"),
        Document("Một văn bản khác hẳn, ngắn.", "web", id="short"),
    ]
    stream = docs + extra
    kept = list(dedup_documents(stream, DedupConfig(backend="numpy"), drops, stats))
    kept_ids = set(_ids(kept))
    assert _ids(kept) == [i for i in _ids(stream) if i in kept_ids]  # input order, nothing reordered
    assert len(stream) == len(kept) + drops.total
    assert stats.docs_in == len(stream) and stats.docs_kept == len(kept)
    assert stats.docs_removed == drops.total
    assert drops.docs[("web", "exact_duplicate")] == 1 and "short" in kept_ids
    dropped_chars = sum(len(d.text) for d in stream if d.id not in kept_ids)
    assert sum(drops.chars.values()) == dropped_chars


def test_batch_size_does_not_change_what_is_kept(planted):
    docs, _ = planted
    sample = docs[:200] + [Document(docs[10].text + " ", "vi", id="exact")]
    results = [_ids(Deduplicator(DedupConfig(backend="numpy", batch_docs=b))(sample)) for b in (1, 7, 256)]
    assert results[0] == results[1] == results[2]
    assert len(results[0]) < len(sample)  # the sample does contain duplicates


@pytest.mark.parametrize(
    "variant",
    [
        "Hôm nay trời đẹp quá, chúng ta đi dạo bờ hồ nhé!",  # identical
        "  Hôm nay   trời đẹp quá,\n chúng ta đi dạo bờ hồ nhé!  ",  # whitespace
        "HÔM NAY TRỜI ĐẸP QUÁ, CHÚNG TA ĐI DẠO BỜ HỒ NHÉ!",  # case
        unicodedata.normalize("NFD", "Hôm nay trời đẹp quá, chúng ta đi dạo bờ hồ nhé!"),  # decomposed marks
        "Hôm nay trời đẹp quá... chúng ta đi dạo bờ hồ nhé?",  # punctuation
    ],
)
@pytest.mark.parametrize("near", [True, False])
def test_exact_duplicates_are_dropped_after_normalization(variant, near):
    original = "Hôm nay trời đẹp quá, chúng ta đi dạo bờ hồ nhé!"
    docs = [Document(original, "a", id="first"), Document("Một câu hoàn toàn khác.", "a", id="other"),
            Document(variant, "b", id="variant")]
    drops = DropCounter()
    dedup = Deduplicator(DedupConfig(near=near, backend="numpy"), drops)
    assert _ids(dedup(docs)) == ["first", "other"]
    assert drops.by_reason() == {"exact_duplicate": 1}
    assert dedup.stats.exact_clusters == 1 and dedup.stats.clusters == 1


def test_normalize_text_makes_composed_and_decomposed_vietnamese_equal():
    composed = "Tiếng Việt — “đẹp” lắm!"
    assert normalize_text(unicodedata.normalize("NFD", composed)) == normalize_text(composed) == "tiếng việt đẹp lắm"
    assert normalize_text("Giá: 3.500đ\u00a0(rẻ)_x 😀") == "giá 3 500đ rẻ x"  # symbols, NBSP, emoji split words


def test_distinct_short_and_wordless_documents_are_kept():
    texts = ["Xin chào", "Xin chào bạn", "!!!", "???", "Xin chào!", "!!!"]
    drops = DropCounter()
    kept = [d.text for d in dedup_documents([Document(t, "s") for t in texts], DedupConfig(backend="numpy"), drops)]
    assert kept == ["Xin chào", "Xin chào bạn", "!!!", "???"]
    assert drops.by_reason() == {"exact_duplicate": 2}
    nothing = DedupConfig(exact=False, near=False)
    assert len(list(dedup_documents([Document(t, "s") for t in texts], nothing, DropCounter()))) == len(texts)


def test_clusters_count_kept_documents_with_duplicates(planted):
    docs, _ = planted
    a, b = docs[0], docs[1]
    a_words = a.text.split()
    near_a = " ".join(a_words[:-3] + ["thêm", "vài", "chữ"])
    stream = [a, b, Document(near_a, "s"), Document(b.text.lower(), "s"), Document(near_a + " nữa", "s")]
    dedup = Deduplicator(DedupConfig(backend="numpy"))
    assert len(list(dedup(stream))) == 2
    s = dedup.stats
    assert (s.near_duplicates, s.exact_duplicates, s.near_clusters, s.exact_clusters, s.clusters) == (2, 1, 1, 1, 2)


def test_index_memory_is_268_bytes_per_kept_document(planted):
    docs, _ = planted
    dedup = Deduplicator(DedupConfig(backend="numpy"))
    list(dedup(docs))
    assert dedup.stats.index_bytes == 268 * dedup.stats.docs_kept


def test_default_lsh_catches_edited_copies_and_spares_related_text():
    lsh = DedupConfig().lsh_params()
    assert lsh.bands * lsh.rows <= 128
    assert lsh.catch_probability(0.46) > 0.9  # 5-gram Jaccard of a copy with 10% of its words edited
    assert lsh.catch_probability(0.2) < 0.05  # sharing about a third of the text
    assert lsh.catch_probability(0.05) < 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_minhash_slots_agree_with_probability_jaccard(backend):
    rng = np.random.default_rng(0)
    signer = make_signer(backend, 128, 1309)
    for jaccard in (0.2, 0.5, 0.8):
        shared = round(2 * 200 * jaccard / (1 + jaccard))
        rows, offsets = [], [0]
        for _ in range(60):
            common = rng.integers(0, 2**63, shared, dtype=np.uint64)
            for _side in range(2):
                rows.append(np.concatenate([common, rng.integers(0, 2**63, 200 - shared, dtype=np.uint64)]))
                offsets.append(offsets[-1] + 200)
        sig = signer(np.concatenate(rows), np.array(offsets))
        agreement = (sig[0::2] == sig[1::2]).mean()
        assert abs(agreement - shared / (400 - shared)) < 0.03


def test_key_index_returns_every_owner_of_a_key():
    index = KeyIndex(np.uint32)
    index.add(np.array([5, 9, 5], dtype=np.uint32), np.array([0, 0, 1], dtype=np.uint32))
    for batch in range(20):  # enough batches to force merges of sorted runs
        index.add(np.array([100 + batch, 5], dtype=np.uint32), np.array([2 + batch, 2 + batch], dtype=np.uint32))
    positions, owners = index.lookup(np.array([7, 5, 109], dtype=np.uint32))
    found = sorted(zip(positions.tolist(), owners.tolist()))
    assert found == [(1, 0), (1, 1)] + [(1, o) for o in range(2, 22)] + [(2, 11)]
    assert len(index) == 43 and len(index._keys) < 20  # merged, not one run per batch


def test_config_lists_every_problem():
    with pytest.raises(ConfigError) as err:
        DedupConfig(ngram_words=0, threshold=1.2, backend="gpu", bands=100, rows=2, near="yes")
    problems = " ".join(err.value.problems)
    for name in ("ngram_words", "threshold", "backend", "bands x rows", "near"):
        assert name in problems
    assert len(err.value.problems) == 5
    with pytest.raises(ConfigError, match="unknown field 'treshold'"):
        DedupConfig.from_dict({"treshold": 0.5})
    assert set(DedupConfig.help()) == set(DedupConfig().to_dict()) and all(DedupConfig.help().values())


def test_without_rensa_auto_falls_back_to_numpy_and_rensa_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "rensa", None)  # makes `import rensa` raise ImportError
    assert Deduplicator(DedupConfig()).stats.backend == "numpy"
    with pytest.raises(ConfigError, match="pip install rensa"):
        Deduplicator(DedupConfig(backend="rensa"))
