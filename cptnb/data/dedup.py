"""Remove duplicates: exact (normalized-text hash), then near (MinHash LSH over word n-grams).

Exact duplicates: the text is normalized (NFC, lowercase, punctuation and symbols
to spaces, whitespace collapsed) and hashed; the first document with a given
normalized text is kept. Near duplicates: the set of word ``ngram_words``-grams
of the normalized text is summarized by a MinHash signature of ``num_perm``
values, cut into ``bands`` bands of ``rows`` values; a document is a near
duplicate of an earlier *kept* document when at least ``min_band_matches`` of
their bands are equal, and is dropped. Requiring several equal bands instead of
the usual one makes the S-curve much steeper for the same memory, which keeps
chance matches rare in corpora of millions of documents.

Defaults (5-grams, threshold 0.35 -> 32 bands x 2 rows, >= 4 equal): a copy of a
~300-word document with 5-10% of its words substituted, inserted or deleted has
a 5-gram Jaccard of 0.39-0.66 and is caught with probability 0.74-1.0 (0.98 on
average); a pair sharing ~30% of its text (Jaccard 0.2) is caught 4% of the time,
one at Jaccard 0.1 0.03% of the time.

Memory: only kept documents are indexed, in sorted NumPy arrays (no Python
object per key): 8 + 4 bytes for the exact hash and its owner, and per band a
4-byte key + 4-byte owner (8 + 4 when ``min_band_matches`` is 1, which needs
64-bit keys). With the defaults that is 12 + 32 x 8 = 268 bytes per kept
document, about 270 MB per million, briefly about twice that while the largest
sorted runs merge; plus 2 bits per kept document for the cluster counts.

Example::

    drops = DropCounter()
    dedup = Deduplicator(DedupConfig(), drops)
    kept = list(dedup(docs))
    dedup.stats.near_duplicates, dedup.stats.clusters
"""

# MinHash implementation, chosen by measurement: 20,000 synthetic Vietnamese-like
# documents of ~300 words, 128 permutations, word 5-grams, 2 CPU cores shared with
# other work (best of 3 in a run; the range covers two runs). Each starts from the
# same raw text and does normalize -> shingle -> sign:
#
#   datasketch 2.0.0 MinHash.update_batch (SHA-1)           760 -  1,030 docs/s
#   rensa 0.5.0 RMinHash, str shingles, one doc a call    4,100 -  4,510 docs/s
#   NumPy multiply-add permutations (_NumpySigner)        7,080 -  8,040 docs/s
#   rensa 0.5.0 RMinHash on our prehashed shingles        8,920 - 11,150 docs/s  <- used when installed
#
# Signing alone, rensa does 89,000-136,000 docs/s and NumPy 23,000-27,600: the rest
# is Python normalization and word hashing. The whole Deduplicator runs at 7,600-8,400
# docs/s with rensa and 5,100-6,600 with the NumPy fallback. Both estimate Jaccard
# without bias (rensa with ~30% less variance) and meet the recall/precision goals,
# but they are different hash families: pin rensa where runs must be reproducible.

from __future__ import annotations

import functools
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, NamedTuple

import numpy as np
import xxhash

from cptnb.configbase import Section, choice, option
from cptnb.data.documents import Document, DropCounter
from cptnb.data.textkey import _mix, _splitmix64, gram_hashes, word_hashes
from cptnb.errors import ConfigError

BACKENDS = ("auto", "rensa", "numpy")
_MAX_AUTO_BANDS = 32  # memory cap when bands are derived: 8 bytes per band per kept document
_MAX_AUTO_MATCHES = 8
_U64 = np.uint64


# --------------------------------------------------------------------------- config


@dataclass
class DedupConfig(Section):
    """Exact and near-duplicate removal; near duplicates are found with MinHash LSH over word n-grams."""

    exact: bool = option(True, "Drop documents whose normalized text (NFC, lowercase, no punctuation) was kept before.")
    near: bool = option(True, "Drop documents whose word n-gram set is close to that of an already kept document.")
    ngram_words: int = option(5, "Shingle size in words: documents are compared as sets of word n-grams this long.")
    num_perm: int = option(128, "MinHash signature length (permutations): more is more accurate and slower.")
    threshold: float = option(
        0.35, "Jaccard similarity of n-gram sets caught about half the time; with 5-grams 0.35 is ~10% of words edited."
    )
    seed: int = option(1309, "Seed of the MinHash permutations: the same seed gives the same result.")
    bands: int = option(0, "LSH bands; 0 derives bands, rows and min_band_matches from threshold and num_perm.")
    rows: int = option(0, "MinHash values per LSH band; 0 derives it from threshold and num_perm.")
    min_band_matches: int = option(0, "Equal bands that make two documents near duplicates; 0 derives it.")
    backend: str = option("auto", "MinHash implementation: auto (rensa when installed, else numpy), rensa or numpy.")
    batch_docs: int = option(256, "Documents signed together: bounds the memory of one step, not the result.")

    def problems(self) -> list[str]:
        """Every invalid value, with the fix (empty when the config is valid)."""
        p: list[str] = []
        for name in ("exact", "near"):
            if not isinstance(getattr(self, name), bool):
                p.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name, low in (("ngram_words", 1), ("num_perm", 2), ("batch_docs", 1)):
            if not _is_int(getattr(self, name)) or getattr(self, name) < low:
                p.append(f"{name} must be an integer >= {low}, got {getattr(self, name)!r}")
        for name in ("bands", "rows", "min_band_matches"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                p.append(f"{name} must be an integer >= 0 (0 = derive from threshold), got {getattr(self, name)!r}")
        if not _is_int(self.seed):
            p.append(f"seed must be an integer, got {self.seed!r}")
        threshold = self.threshold
        if not (isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and 0 < threshold < 1):
            p.append(f"threshold must be a Jaccard similarity in (0, 1), got {self.threshold!r}")
        choice(p, "backend", self.backend, BACKENDS)
        lsh_fields = (self.num_perm, self.bands, self.rows, self.min_band_matches)
        if all(_is_int(v) and v >= 0 for v in lsh_fields) and self.num_perm >= 2:  # else already reported
            p += self._lsh_problems()
        return p

    def _lsh_problems(self) -> list[str]:
        p: list[str] = []
        if self.bands and self.rows and self.bands * self.rows > self.num_perm:
            p.append(f"bands x rows ({self.bands} x {self.rows}) must be <= num_perm ({self.num_perm}); lower either")
        if self.rows > self.num_perm:
            p.append(f"rows ({self.rows}) must be <= num_perm ({self.num_perm})")
        most_bands = self.bands or min(self.num_perm // max(self.rows, 1), _MAX_AUTO_BANDS)
        if self.min_band_matches > most_bands:
            p.append(f"min_band_matches ({self.min_band_matches}) must be <= the number of bands ({most_bands})")
        return p

    def lsh_params(self) -> LshParams:
        """(bands, rows, min_band_matches): the fields set by the user, the rest derived from threshold."""
        return _derive_lsh(self.threshold, self.num_perm, self.bands, self.rows, self.min_band_matches)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class LshParams(NamedTuple):
    """Banding of the signature: ``bands`` bands of ``rows`` values, ``min_band_matches`` equal ones make a match."""

    bands: int
    rows: int
    min_band_matches: int

    def catch_probability(self, jaccard: float | np.ndarray) -> np.ndarray:
        """Chance that a pair with this Jaccard similarity shares >= min_band_matches bands (the S-curve)."""
        p = np.asarray(jaccard, dtype=float) ** self.rows
        return 1.0 - _binomial_cdf_below(p, self.bands, self.min_band_matches)[-1]


def _binomial_cdf_below(p: np.ndarray, n: int, m: int) -> list[np.ndarray]:
    """[P(X < 1), ..., P(X < m)] for X ~ Binomial(n, p), elementwise in p."""
    pmf = (1.0 - p) ** n
    out, cdf = [], np.zeros_like(p)
    for i in range(m):
        cdf = cdf + pmf
        out.append(cdf)
        with np.errstate(divide="ignore", invalid="ignore"):
            pmf = np.where(p < 1, pmf * (n - i) / (i + 1) * p / np.where(p < 1, 1 - p, 1), 0.0)
    return out


@functools.lru_cache(maxsize=64)
def _derive_lsh(threshold: float, num_perm: int, bands: int, rows: int, matches: int) -> LshParams:
    """Fill the unset LSH parameters by minimizing false-positive + false-negative area around the threshold.

    Same criterion as datasketch's ``_optimal_param`` (area under the S-curve below
    the threshold plus area above it that is missed), extended to "at least m of b
    bands equal", and capped at 32 bands so memory stays at 8 bytes per band.
    """
    below, above = np.linspace(0, threshold, 101), np.linspace(threshold, 1, 101)
    best: tuple[float, LshParams] | None = None
    for r in [rows] if rows else range(1, num_perm // max(bands, 1) + 1):
        for b in [bands] if bands else range(max(matches, 1), min(num_perm // r, _MAX_AUTO_BANDS) + 1):
            ms = [matches] if matches else range(1, min(b, _MAX_AUTO_MATCHES) + 1)
            miss_below = _binomial_cdf_below(below**r, b, max(ms))
            miss_above = _binomial_cdf_below(above**r, b, max(ms))
            for m in ms:
                area = np.trapezoid(1 - miss_below[m - 1], below) + np.trapezoid(miss_above[m - 1], above)
                if best is None or area < best[0] - 1e-12:
                    best = (float(area), LshParams(b, r, m))
    assert best is not None  # DedupConfig._lsh_problems rules out empty searches
    return best[1]


# --------------------------------------------------------------------------- keys of documents and shingles


def _exact_key(text: str, hashes: np.ndarray) -> int:
    """Key of the normalized text; a text with no words at all falls back to its stripped NFC form."""
    if len(hashes):
        return xxhash.xxh3_64_intdigest(hashes.tobytes())
    return xxhash.xxh3_64_intdigest(unicodedata.normalize("NFC", text).strip().encode("utf-8"), seed=1)


def _shingles(batch_hashes: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat n-gram hashes of several documents and row offsets (len docs + 1); every doc has >= 1 word.

    A document shorter than ``n`` words is padded with zero hashes, so it has one
    shingle: its whole text.
    """
    padded = [h if len(h) >= n else np.concatenate([h, np.zeros(n - len(h), dtype=_U64)]) for h in batch_hashes]
    counts = np.array([len(h) - n + 1 for h in padded], dtype=np.int64)
    flat = gram_hashes(np.concatenate(padded), n)
    # Grams that start in one document and end in the next are computed, then dropped.
    starts = np.zeros(len(padded), dtype=np.int64)
    np.cumsum([len(h) for h in padded[:-1]], out=starts[1:])
    keep = np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts)])
    offsets = np.zeros(len(padded) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return flat[keep], offsets


# --------------------------------------------------------------------------- MinHash backends


class _NumpySigner:
    """Classic MinHash with permutations h_k(x) = a_k * x + b_k mod 2^64 over mixed 64-bit shingle hashes."""

    _CHUNK = 4096  # shingles per step: 128 x 4096 x 8 bytes = 4 MB, about what stays in cache

    def __init__(self, num_perm: int, seed: int):
        params = _splitmix64(seed, 2 * num_perm)
        self._a = (params[:num_perm] | _U64(1))[:, None]
        self._b = params[num_perm:][:, None]
        self.name = "numpy"

    def __call__(self, flat: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Signatures, shape (docs, num_perm), uint64; row i covers flat[offsets[i]:offsets[i+1]]."""
        # Segments = documents cut at chunk boundaries, so one huge document never needs a huge buffer.
        cuts = np.union1d(offsets[:-1], np.arange(0, len(flat), self._CHUNK))
        buf = np.empty((len(self._a), min(self._CHUNK, len(flat))), dtype=_U64)
        parts = []
        for lo in range(0, len(flat), self._CHUNK):
            hi = min(lo + self._CHUNK, len(flat))
            view = buf[:, : hi - lo]
            np.multiply(self._a, flat[None, lo:hi], out=view)  # wraps modulo 2**64, as intended
            view += self._b
            seg = cuts[np.searchsorted(cuts, lo) : np.searchsorted(cuts, hi)] - lo
            parts.append(np.minimum.reduceat(view, seg, axis=1))
        per_segment = np.concatenate(parts, axis=1)
        return np.minimum.reduceat(per_segment, np.searchsorted(cuts, offsets[:-1]), axis=1).T


class _RensaSigner:
    """rensa's R-MinHash (Rust, SIMD) over the same prehashed shingles."""

    def __init__(self, num_perm: int, seed: int):
        import rensa

        self._rminhash = rensa.RMinHash
        self._num_perm, self._seed = num_perm, seed
        self.name = f"rensa {_version('rensa')}"

    def __call__(self, flat: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        matrix = self._rminhash.digest_matrix_from_flat_token_hashes(
            flat, offsets.astype(_U64), self._num_perm, self._seed
        )
        return np.array(matrix.to_rows(), dtype=_U64).reshape(len(offsets) - 1, self._num_perm)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def make_signer(backend: str, num_perm: int, seed: int):
    """The MinHash function ``(flat_shingle_hashes, offsets) -> (docs, num_perm) uint64`` for ``backend``."""
    if backend in ("auto", "rensa"):
        try:
            return _RensaSigner(num_perm, seed)
        except ImportError:
            if backend == "rensa":
                raise ConfigError(
                    ["backend is 'rensa' but rensa is not installed: pip install rensa==0.5.0, or use auto/numpy"],
                    where="DedupConfig",
                ) from None
    return _NumpySigner(num_perm, seed)


# --------------------------------------------------------------------------- index of kept documents


def _merge_runs(
    old_keys: np.ndarray, old_owners: np.ndarray, new_keys: np.ndarray, new_owners: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Merge two sorted runs in linear time; on equal keys the older owner comes first."""
    slots = np.searchsorted(old_keys, new_keys, side="right") + np.arange(len(new_keys))
    from_new = np.zeros(len(old_keys) + len(new_keys), dtype=bool)
    from_new[slots] = True
    keys = np.empty(len(from_new), dtype=old_keys.dtype)
    owners = np.empty(len(from_new), dtype=old_owners.dtype)
    keys[slots], owners[slots] = new_keys, new_owners
    keys[~from_new], owners[~from_new] = old_keys, old_owners
    return keys, owners


class KeyIndex:
    """Multimap key -> kept-document ordinal, as a few sorted NumPy runs (no Python object per key).

    Each batch of new keys becomes a sorted run; runs are merged like a binary
    counter (linear merges), so there are O(log n) of them, lookups are a
    ``searchsorted`` per run, and the largest merge briefly needs about twice the
    index's memory.
    """

    def __init__(self, dtype: type = np.uint64):
        self.dtype = np.dtype(dtype)
        self._keys: list[np.ndarray] = []
        self._owners: list[np.ndarray] = []

    def add(self, keys: np.ndarray, owners: np.ndarray) -> None:
        """Index ``keys[i] -> owners[i]`` (1-D arrays of equal length)."""
        if len(keys) == 0:
            return
        order = np.argsort(keys, kind="stable")
        keys, owners = keys.astype(self.dtype)[order], owners.astype(np.uint32)[order]
        while self._keys and len(self._keys[-1]) <= 2 * len(keys):
            keys, owners = _merge_runs(self._keys.pop(), self._owners.pop(), keys, owners)
        self._keys.append(keys)
        self._owners.append(owners)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every hit as (position in ``keys``, owner); a key with several owners yields several hits."""
        keys = keys.astype(self.dtype, copy=False)
        positions, owners = [np.empty(0, np.int64)], [np.empty(0, np.uint32)]
        for run_keys, run_owners in zip(self._keys, self._owners):
            lo = np.searchsorted(run_keys, keys)
            hit = np.flatnonzero(run_keys[np.minimum(lo, len(run_keys) - 1)] == keys)
            if len(hit) == 0:
                continue
            lo = lo[hit]
            reps = np.searchsorted(run_keys, keys[hit], "right") - lo  # hits are rare: only they pay twice
            # Expand each [lo, lo + reps) range into its indices without a Python loop.
            index = np.repeat(lo - np.cumsum(reps) + reps, reps) + np.arange(reps.sum())
            positions.append(np.repeat(hit, reps))
            owners.append(run_owners[index])
        return np.concatenate(positions), np.concatenate(owners)

    def __len__(self) -> int:
        return sum(len(k) for k in self._keys)

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + o.nbytes for k, o in zip(self._keys, self._owners))


class _Bitmap:
    """One bit per kept document: which ones head a duplicate cluster."""

    def __init__(self) -> None:
        self._bits = bytearray()

    def __contains__(self, i: int) -> bool:
        return i >> 3 < len(self._bits) and bool(self._bits[i >> 3] >> (i & 7) & 1)

    def add(self, i: int) -> bool:
        """Set bit ``i``; True when it was not set before."""
        if i in self:
            return False
        if i >> 3 >= len(self._bits):  # grow by doubling, so growth costs O(1) per document
            self._bits.extend(bytes(max(len(self._bits), (i >> 3) + 1 - len(self._bits))))
        self._bits[i >> 3] |= 1 << (i & 7)
        return True


# --------------------------------------------------------------------------- the stage


@dataclass
class _BatchView:
    """What is known about one batch before its documents are decided in order."""

    exact_keys: np.ndarray  # (docs,) normalized-text hashes
    exact_owner: np.ndarray  # (docs,) kept ordinal from earlier batches with the same text, or -1
    first: list[int]  # per position, the first position in the batch with the same text
    rows: dict[int, int]  # position -> row of band_keys, for the documents that were signed
    positions: list[int]  # row -> position
    band_keys: np.ndarray  # (signed docs, bands)
    near_owner: np.ndarray  # per row, kept ordinal from earlier batches with enough equal bands, or -1
    peers: dict[int, list[tuple[int, int]]]  # row -> [(equal bands, earlier row)], most bands first


def _peers_in_batch(band_keys: np.ndarray, min_matches: int) -> dict[int, list[tuple[int, int]]]:
    """Pairs of rows of one batch with >= ``min_matches`` equal band keys, as later row -> earlier rows.

    Sorting all keys puts equal ones side by side; only those groups (rare: they
    are the duplicates) are walked in Python.
    """
    if band_keys.size == 0:
        return {}
    flat = band_keys.ravel()
    order = np.argsort(flat, kind="stable")
    keys, rows = flat[order], order // band_keys.shape[1]
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    sizes = np.diff(np.append(starts, len(keys)))
    shared: Counter[tuple[int, int]] = Counter()
    for start, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist()):
        members = sorted(set(rows[start : start + size].tolist()))
        shared.update((a, b) for k, a in enumerate(members) for b in members[k + 1 :])
    peers: dict[int, list[tuple[int, int]]] = {}
    for (earlier, later), count in shared.items():
        if count >= min_matches:
            peers.setdefault(later, []).append((count, earlier))
    for candidates in peers.values():
        candidates.sort(key=lambda c: (-c[0], c[1]))
    return peers


@dataclass
class DocKeys:
    """What deduplication needs to know of a batch of documents; computed anywhere (a worker, another machine).

    The scaled path (:mod:`cptnb.data.scale`) computes these in its tasks, in parallel,
    and the decisions are then taken over them in order, by the same code as in process.
    """

    exact: np.ndarray  # (docs,) uint64 normalized-text hashes
    words: np.ndarray  # (docs,) bool: the normalized text has at least one word
    bands: np.ndarray  # (docs, bands) LSH band keys (0 for word-less documents, or when near dedup is off)

    def __len__(self) -> int:
        return len(self.exact)

    @classmethod
    def concat(cls, parts: list[DocKeys]) -> DocKeys:
        return cls(*(np.concatenate([getattr(k, name) for k in parts]) for name in ("exact", "words", "bands")))

    def rows(self, start: int, stop: int) -> DocKeys:
        return DocKeys(self.exact[start:stop], self.words[start:stop], self.bands[start:stop])


@dataclass
class DedupStats:
    """What deduplication did; filled in while the stream is consumed."""

    docs_in: int = 0
    docs_kept: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    exact_clusters: int = 0  # kept documents that had at least one exact duplicate
    near_clusters: int = 0  # kept documents that had at least one near duplicate
    clusters: int = 0  # kept documents that had a duplicate of either kind
    backend: str = ""
    bands: int = 0
    rows: int = 0
    min_band_matches: int = 0
    index_bytes: int = 0  # memory held by the indexes of kept documents

    @property
    def docs_removed(self) -> int:
        return self.exact_duplicates + self.near_duplicates


class Deduplicator:
    """Streaming exact + near deduplication; ``stats`` is up to date after each yielded batch.

    Documents are processed in batches of ``cfg.batch_docs`` (signing many at once
    is what makes MinHash fast) and yielded in their input order; the first
    document of each duplicate cluster is the one kept.
    """

    def __init__(self, cfg: DedupConfig, drops: DropCounter | None = None, stats: DedupStats | None = None):
        self.cfg = cfg
        self.drops = drops if drops is not None else DropCounter()
        self.lsh = cfg.lsh_params()
        self._signer = make_signer(cfg.backend, cfg.num_perm, cfg.seed) if cfg.near else None
        self.stats = stats if stats is not None else DedupStats()
        self.stats.backend = self._signer.name if self._signer else ""
        self.stats.bands, self.stats.rows, self.stats.min_band_matches = self.lsh
        # With >= 2 matching bands required, a chance collision of 32-bit keys cannot make a match alone.
        self._exact_index = KeyIndex(np.uint64)
        self._near_index = KeyIndex(np.uint32 if self.lsh.min_band_matches >= 2 else np.uint64)
        band_consts = _splitmix64(cfg.seed ^ 0xBA5D, self.lsh.rows + self.lsh.bands)
        self._row_coef = band_consts[: self.lsh.rows] | _U64(1)
        self._band_salt = band_consts[self.lsh.rows :]
        self._heads = {"exact": _Bitmap(), "near": _Bitmap()}
        self._kept = 0

    def __call__(self, docs: Iterable[Document]) -> Iterator[Document]:
        it = iter(docs)
        while batch := list(islice(it, self.cfg.batch_docs)):
            yield from self.decide(batch)

    def document_keys(self, texts: list[str]) -> DocKeys:
        """Exact key, has-words flag and LSH band keys of each text: the part of dedup that parallelizes."""
        hashes = [word_hashes(text) for text in texts]
        exact = np.array([_exact_key(t, h) for t, h in zip(texts, hashes)], dtype=_U64)
        words = np.array([len(h) > 0 for h in hashes], dtype=bool)
        bands = np.zeros((len(texts), self.lsh.bands), dtype=self._near_index.dtype)
        signed = np.flatnonzero(words)
        if self.cfg.near and len(signed):
            bands[signed] = self._band_keys([hashes[i] for i in signed])
        return DocKeys(exact, words, bands)

    # -- one batch

    def decide(self, batch: list[Document], keys: DocKeys | None = None) -> list[Document]:
        """The documents of ``batch`` that are kept, in order (drops counted); ``keys`` when already computed.

        Batches must come in stream order, as ``cfg.batch_docs`` documents each; the
        decisions are the same whether ``keys`` were computed here or elsewhere.
        """
        view = self._view(batch, keys)
        kept: list[Document] = []
        fate: list[tuple[str, int]] = []  # per position: (outcome, kept ordinal it belongs to)
        new_exact: list[tuple[int, int]] = []
        new_bands: list[tuple[np.ndarray, int]] = []
        for i, doc in enumerate(batch):
            outcome, owner = self._decide(i, view, fate)
            fate.append((outcome, owner))
            if outcome == "kept":
                kept.append(doc)
                new_exact.append((int(view.exact_keys[i]), owner))
                if i in view.rows:
                    new_bands.append((view.band_keys[view.rows[i]], owner))
            else:
                self._record_drop(doc, outcome, owner)
        self._index_kept(new_exact, new_bands)
        self.stats.docs_in += len(batch)
        self.stats.docs_kept += len(kept)
        return kept

    def _view(self, batch: list[Document], keys: DocKeys | None = None) -> _BatchView:
        """Everything about a batch that can be computed at once, before the in-order decisions."""
        if keys is None:
            hashes = [word_hashes(doc.text) for doc in batch]
            exact_keys = np.array([_exact_key(d.text, h) for d, h in zip(batch, hashes)], dtype=_U64)
            has_words = [len(h) > 0 for h in hashes]
        else:
            exact_keys, has_words = keys.exact, keys.words.tolist()
        exact_owner = self._first_owner(exact_keys) if self.cfg.exact else np.full(len(batch), -1)
        first = self._first_in_batch(exact_keys)
        # Only the first copy of a text is signed; exact duplicates and word-less texts never are.
        signed = [
            i for i in range(len(batch))
            if self.cfg.near and exact_owner[i] < 0 and first[i] == i and has_words[i]
        ]
        if keys is None:
            band_keys = self._band_keys([hashes[i] for i in signed])
        else:
            band_keys = keys.bands[np.array(signed, dtype=np.int64)].astype(self._near_index.dtype, copy=False)
        return _BatchView(
            exact_keys=exact_keys,
            exact_owner=exact_owner,
            first=first,
            rows={i: row for row, i in enumerate(signed)},
            positions=signed,
            band_keys=band_keys,
            near_owner=self._best_owner(band_keys),
            peers=_peers_in_batch(band_keys, self.lsh.min_band_matches),
        )

    def _decide(self, i: int, view: _BatchView, fate: list[tuple[str, int]]) -> tuple[str, int]:
        """(outcome, kept ordinal) for position ``i``: kept, exact_duplicate or near_duplicate."""
        if view.exact_owner[i] >= 0:
            return "exact_duplicate", int(view.exact_owner[i])
        first = view.first[i]
        if first != i and (self.cfg.exact or self.cfg.near):  # same text earlier in this batch: same fate
            outcome, owner = fate[first]
            exact = self.cfg.exact and outcome != "near_duplicate"
            return ("exact_duplicate" if exact else "near_duplicate"), owner
        row = view.rows.get(i)
        if row is not None:
            if view.near_owner[row] >= 0:
                return "near_duplicate", int(view.near_owner[row])
            for _, peer_row in view.peers.get(row, ()):  # most shared bands first
                outcome, owner = fate[view.positions[peer_row]]
                if outcome == "kept":
                    return "near_duplicate", owner
        self._kept += 1
        return "kept", self._kept - 1

    def _first_owner(self, keys: np.ndarray) -> np.ndarray:
        """Kept ordinal with the same exact key, or -1 (exact keys of kept documents are unique)."""
        owner = np.full(len(keys), -1, dtype=np.int64)
        positions, owners = self._exact_index.lookup(keys)
        owner[positions] = owners
        return owner

    def _first_in_batch(self, keys: np.ndarray) -> list[int]:
        """For each position, the first position in the batch with the same exact key.

        Without exact dedup, identical texts still share their fate (they would
        match each other on every band anyway), which saves signing them twice.
        """
        first: dict[int, int] = {}
        return [first.setdefault(k, i) for i, k in enumerate(keys.tolist())]

    def _band_keys(self, hashes: list[np.ndarray]) -> np.ndarray:
        """LSH band keys, shape (docs, bands), one 64-bit hash of each band's MinHash values."""
        bands, rows = self.lsh.bands, self.lsh.rows
        if not hashes:
            return np.empty((0, bands), dtype=self._near_index.dtype)
        flat, offsets = _shingles(hashes, self.cfg.ngram_words)
        sig = self._signer(flat, offsets)[:, : bands * rows].reshape(len(hashes), bands, rows)
        keys = _mix((sig * self._row_coef).sum(axis=2, dtype=_U64) + self._band_salt)
        if self._near_index.dtype == np.uint32:
            keys = keys >> _U64(32)
        return keys.astype(self._near_index.dtype)

    def _best_owner(self, band_keys: np.ndarray) -> np.ndarray:
        """Per row, the kept ordinal sharing the most bands (if >= min_band_matches), else -1."""
        best = np.full(len(band_keys), -1, dtype=np.int64)
        if band_keys.size == 0:
            return best
        positions, owners = self._near_index.lookup(band_keys.ravel())
        if len(positions) == 0:
            return best
        pairs = (positions // band_keys.shape[1]) << 32 | owners.astype(np.int64)
        pair, count = np.unique(pairs, return_counts=True)
        enough = count >= self.lsh.min_band_matches
        pair, count = pair[enough], count[enough]
        order = np.lexsort((-count, pair >> 32))  # per row, the owner with the most bands first
        rows, owners_sorted = pair[order] >> 32, pair[order] & 0xFFFFFFFF
        first = np.unique(rows, return_index=True)[1]
        best[rows[first]] = owners_sorted[first]
        return best

    def _record_drop(self, doc: Document, outcome: str, owner: int) -> None:
        self.drops.drop(doc.source, outcome, len(doc.text))
        kind, other = ("exact", "near") if outcome == "exact_duplicate" else ("near", "exact")
        setattr(self.stats, f"{kind}_duplicates", getattr(self.stats, f"{kind}_duplicates") + 1)
        if self._heads[kind].add(owner):
            setattr(self.stats, f"{kind}_clusters", getattr(self.stats, f"{kind}_clusters") + 1)
            self.stats.clusters += owner not in self._heads[other]

    def _index_kept(self, new_exact: list, new_bands: list) -> None:
        if new_exact and self.cfg.exact:
            keys, owners = zip(*new_exact)
            self._exact_index.add(np.array(keys, dtype=_U64), np.array(owners, dtype=np.uint32))
        if new_bands:
            keys = np.concatenate([k for k, _ in new_bands])
            owners = np.repeat(np.array([o for _, o in new_bands], dtype=np.uint32), self.lsh.bands)
            self._near_index.add(keys, owners)
        self.stats.index_bytes = self._exact_index.nbytes + self._near_index.nbytes


def dedup_documents(
    docs: Iterable[Document], cfg: DedupConfig, drops: DropCounter, stats: DedupStats | None = None
) -> Iterator[Document]:
    """Yield the documents that are neither exact nor near duplicates of an earlier one, in order.

    Each dropped document is counted in ``drops`` as ``exact_duplicate`` or
    ``near_duplicate``; pass ``stats`` to read cluster counts afterwards.

    Example::

        stats = DedupStats()
        kept = list(dedup_documents(docs, DedupConfig(), drops, stats))
        stats.clusters, drops.by_reason()
    """
    yield from Deduplicator(cfg, drops, stats)(docs)
