"""The corpus stage in process vs on datatrove's local executor, at 1 and 2 workers; dedup time and memory.

What it does
------------
1. Builds the synthetic corpus of ``prepare_throughput.py`` (same generator: recombined
   Vietnamese sentences, ~2% English, planted exact and near duplicates) in a temporary
   directory, never in the repo: >= 1 GB by default (``--docs 480000``). ``--corpus DIR``
   reuses one already built.
2. Runs each side in its own subprocess (so peak RSS is per side), one after the other,
   with ``DataConfig()`` defaults for Vietnamese (no decontamination, split, replay or
   packing: they need a tokenizer and are the same code on both paths):

   * ``inprocess_1`` / ``inprocess_2``: ``CorpusStream`` (what ``prepare()`` runs) with
     ``num_proc`` 1 and 2: read -> clean -> language -> quality in the worker pool, then
     exact + near dedup in the main process.
   * ``local_1`` / ``local_2``: ``ScaledStream`` on datatrove's ``LocalPipelineExecutor``
     with ``workers`` 1 and 2 and ``tasks`` = 2 x workers (at least one per work unit):
     phase 1 (tasks: read, stages, dedup keys, shards), phase 2 (this process: dedup
     decisions over the keys, in order).

   Each side records wall and CPU seconds, MB/s of input text, peak RSS of its main
   process (``VmHWM``: ``ru_maxrss`` would carry this script's own size over the fork)
   and of its largest worker (sampled every 0.5 s), dedup seconds and index bytes, and the
   SHA-256 of every kept text in order; the sides must agree on those and on the
   per-source report.
3. Projects the seed corpus (20.9 GB) on a 128-CPU node from the measured per-core rate
   of phase 1 (``local_1``) and the measured merge rate of phase 2 (which stays one process).
4. Writes ``benchmarks/results/prepare_scale.{json,md}`` after every side (with the load
   average at the start and the end: the machine is shared).

Usage::

    .venv/bin/python benchmarks/prepare_scale.py                      # >= 1 GB corpus (480,000 documents)
    .venv/bin/python benchmarks/prepare_scale.py --docs 50000         # the throughput benchmark's size
    .venv/bin/python benchmarks/prepare_scale.py --corpus /tmp/c/corpus --sides inprocess_1,local_2
    .venv/bin/python benchmarks/prepare_scale.py --probe-memory /tmp/c/corpus   # peak RSS of the in-process path
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from _machine import DescendantPeak, cpu_model, peak_rss_mb  # noqa: E402

SIDES = ("inprocess_1", "inprocess_2", "local_1", "local_2")
SEED_CORPUS_GB = 20.9
NODE_CPUS = 128


def _cfg(corpus: Path, num_proc: int = 1, **scale):
    from cptnb.config import DataConfig

    return DataConfig(sources=[str(corpus)], replay_sources=[], heldout_domain=[], heldout_general=[],
                      num_proc=num_proc, scale=scale)


def _cpu() -> tuple[float, float]:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


class _TimedDecide:
    """Wraps Deduplicator.decide (both paths call it) to add up its seconds."""

    def __init__(self):
        from cptnb.data.dedup import Deduplicator

        self.seconds, original = 0.0, Deduplicator.decide

        def decide(dedup, batch, keys=None):
            start = time.perf_counter()
            try:
                return original(dedup, batch, keys)
            finally:
                self.seconds += time.perf_counter() - start

        Deduplicator.decide = decide


def _digest(stream, docs) -> dict:
    kept = hashlib.sha256()
    n = 0
    for doc in docs:
        kept.update(hashlib.sha256(doc.text.encode("utf-8")).digest())
        n += 1
    return {"kept_docs": n, "kept_sha256": kept.hexdigest(), "report": stream.report(),
            "index_bytes": stream.dedup_stats.index_bytes, "dedup_stats": vars(stream.dedup_stats)}


def run_inprocess(corpus: Path, workers: int) -> dict:
    from cptnb.data.parallel import StagePool
    from cptnb.data.pipeline import CorpusStream

    timer = _TimedDecide()
    cfg = _cfg(corpus, workers)
    t0, cpu0 = time.perf_counter(), _cpu()
    with StagePool(workers) as pool:
        stream = CorpusStream(cfg, cfg.sources, cfg.language, None, pool)
        out = _digest(stream, stream.documents())
    wall = time.perf_counter() - t0
    cpu = _cpu()
    return {**out, "wall_s": wall, "cpu_main_s": cpu[0] - cpu0[0], "cpu_workers_s": cpu[1] - cpu0[1],
            "dedup_s": timer.seconds, "stage_s": stream.stage_seconds}


def run_local(corpus: Path, workers: int, work: Path) -> dict:
    from cptnb.data.scale.merge import ScaledStream
    from cptnb.data.scale.plan import plan_units

    timer = _TimedDecide()
    units = plan_units([str(corpus)], _cfg(corpus).scale.split_bytes)
    cfg = _cfg(corpus, executor="local", workers=workers, tasks=max(2 * workers, len(units)))
    t0, cpu0 = time.perf_counter(), _cpu()
    stream = ScaledStream(cfg, cfg.sources, cfg.language, None, work, cfg.scale)
    stream.run_shards()
    t1 = time.perf_counter()
    rss_shards = peak_rss_mb()
    out = _digest(stream, stream.documents())
    wall = time.perf_counter() - t0
    cpu = _cpu()
    return {**out, "wall_s": wall, "shards_s": t1 - t0, "merge_s": wall - (t1 - t0), "tasks": stream.tasks,
            "units": len(units), "cpu_main_s": cpu[0] - cpu0[0], "cpu_workers_s": cpu[1] - cpu0[1],
            "dedup_s": timer.seconds, "stage_s": stream.stage_seconds, "peak_rss_before_merge_mb": rss_shards}


def probe_memory(corpus: Path, workers: int = 2) -> dict:
    """Peak RSS of the in-process path (CorpusStream + dedup) with nothing else kept: the memory table's probe."""
    from cptnb.data.parallel import StagePool
    from cptnb.data.pipeline import CorpusStream

    cfg = _cfg(corpus, workers)
    with StagePool(workers) as pool:
        stream = CorpusStream(cfg, cfg.sources, cfg.language, None, pool)
        kept = sum(1 for _ in stream.documents())
    return {"kept": kept, "peak_rss_mb": round(peak_rss_mb(), 1),
            "index_mb": round(stream.dedup_stats.index_bytes / 1e6, 1)}


def child(side: str, corpus: Path, result: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    kind, workers = side.rsplit("_", 1)
    with DescendantPeak() as workers_peak:  # datatrove's pool workers are no direct children: sampled
        if kind == "inprocess":
            out = run_inprocess(corpus, int(workers))
        else:
            out = run_local(corpus, int(workers), result.parent / f"work_{side}")
    out["peak_rss_mb"] = peak_rss_mb()
    out["peak_rss_largest_worker_mb"] = workers_peak.mb
    result.write_text(json.dumps(out))


def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def _corpus_bytes(corpus: Path) -> int:
    """UTF-8 bytes of the documents' text (what MB/s counts, as in prepare_throughput)."""
    total = 0
    for path in sorted(corpus.glob("*.jsonl")):
        with open(path, encoding="utf-8") as fh:
            total += sum(len(json.loads(line)["text"].encode("utf-8")) for line in fh)
    return total


def summarize(results: dict, meta: dict) -> dict:
    mb = meta["text_bytes"] / 1e6
    sides = {}
    for side, r in results.items():
        sides[side] = {
            "wall_s": round(r["wall_s"], 1), "mb_per_s": round(mb / r["wall_s"], 3),
            "docs_per_s": round(meta["docs"] / r["wall_s"], 1),
            "cpu_main_s": round(r["cpu_main_s"], 1), "cpu_workers_s": round(r["cpu_workers_s"], 1),
            "peak_rss_main_mb": round(r["peak_rss_mb"], 1),
            "peak_rss_largest_worker_mb": round(r["peak_rss_largest_worker_mb"], 1),
            "dedup_decisions_s": round(r["dedup_s"], 1), "dedup_index_mb": round(r["index_bytes"] / 1e6, 1),
            "kept_docs": r["kept_docs"],
            **{k: round(r[k], 1) for k in ("shards_s", "merge_s", "peak_rss_before_merge_mb") if k in r},
            **{k: r[k] for k in ("tasks", "units") if k in r},
            "stage_s": {k: round(v, 1) for k, v in r["stage_s"].items()},
        }
    first = next(iter(results.values()))
    identical = all(r["kept_sha256"] == first["kept_sha256"] and r["report"] == first["report"]
                    for r in results.values())
    out = {"sides": sides, "identical_decisions": identical, "report": first["report"],
           "kept_docs": first["kept_docs"], "dedup_stats": first["dedup_stats"]}
    if "local_1" in results:
        r1 = results["local_1"]
        per_core_mb_s = mb / r1["shards_s"]  # one task at a time: the per-core rate of phase 1
        merge_mb_s = mb / r1["merge_s"]
        speedup = (r1["shards_s"] / results["local_2"]["shards_s"]) if "local_2" in results else None
        shards_h = SEED_CORPUS_GB * 1e3 / (per_core_mb_s * NODE_CPUS) / 3600
        merge_h = SEED_CORPUS_GB * 1e3 / merge_mb_s / 3600
        # CPU seconds per MB of phase 1 (all CPU of the side minus the merge, which is one busy process): what
        # an idle core would need, less inflated by a crowded machine than wall time.
        widest = results.get("local_2", r1)
        cpu_per_mb = (widest["cpu_main_s"] + widest["cpu_workers_s"] - widest["merge_s"]) / mb
        out["projection"] = {
            "per_core_mb_per_s": round(per_core_mb_s, 3), "merge_mb_per_s": round(merge_mb_s, 3),
            "phase1_cpu_s_per_mb": round(cpu_per_mb, 3),
            "phase1_hours_from_cpu_time": round(SEED_CORPUS_GB * 1e3 * cpu_per_mb / NODE_CPUS / 3600, 3),
            "phase1_speedup_2_workers": round(speedup, 2) if speedup else None,
            "seed_gb": SEED_CORPUS_GB, "node_cpus": NODE_CPUS,
            "phase1_hours_at_linear_scaling": round(shards_h, 3), "merge_hours": round(merge_h, 3),
            "total_hours": round(shards_h + merge_h, 3),
            "index_bytes_per_kept_doc": round(r1["index_bytes"] / max(r1["kept_docs"], 1), 1),
        }
    return out


def write_reports(report: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "prepare_scale.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    m, s = report["meta"], report["summary"]
    rows = [("wall seconds", "wall_s"), ("MB/s (input text)", "mb_per_s"), ("documents/s", "docs_per_s"),
            ("CPU seconds: main / workers", None), ("peak RSS MB: main / largest worker", None),
            ("phase 1 (tasks) / phase 2 (merge) seconds", None), ("dedup decision seconds (main)", "dedup_decisions_s"),
            ("dedup index MB (kept documents)", "dedup_index_mb"), ("kept documents", "kept_docs")]
    sides = list(s["sides"])
    lines = [
        "# prepare_scale: the corpus stage in process vs on datatrove's local executor", "",
        f"Corpus: {m['docs']:,} documents, {m['text_bytes'] / 1e6:,.1f} MB of text ({m['file_bytes'] / 1e6:,.1f} MB "
        f"of JSONL) in {m['files']} files, generated by prepare_throughput's builder (seed {m['seed']}). "
        f"Machine: {m['cpu']}, {m['cores']} cores, shared; load average {m['load_start']} at the start, "
        f"{m['load_end']} at the end. {m['when']}.", "",
        "| | " + " | ".join(sides) + " |", "|---|" + "---:|" * len(sides),
    ]
    for label, key in rows:
        cells = []
        for side in sides:
            x = s["sides"][side]
            if key:
                cells.append(f"{x[key]:,}")
            elif label.startswith("CPU"):
                cells.append(f"{x['cpu_main_s']} / {x['cpu_workers_s']}")
            elif label.startswith("peak"):
                cells.append(f"{x['peak_rss_main_mb']:.0f} / {x['peak_rss_largest_worker_mb']:.0f}")
            else:
                cells.append(f"{x['shards_s']} / {x['merge_s']}" if "shards_s" in x else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", f"Identical decisions on every side (SHA-256 of every kept text in order, and the per-source "
              f"report): **{s['identical_decisions']}**. Kept {s['kept_docs']:,} documents."]
    p = s.get("projection")
    if p:
        lines += ["", "## Projection: seed 001 (20.9 GB) on a 128-CPU node", "",
                  f"- phase 1 per core (local_1, one task at a time): {p['per_core_mb_per_s']} MB/s wall; 2 workers "
                  f"gave a phase-1 speedup of {p['phase1_speedup_2_workers']}x on this shared 2-core machine",
                  f"- 20.9 GB over 128 cores at that rate, scaling linearly: {p['phase1_hours_at_linear_scaling']} h; "
                  f"from CPU time instead ({p['phase1_cpu_s_per_mb']} CPU s per MB, what an idle core needs): "
                  f"{p['phase1_hours_from_cpu_time']} h",
                  f"- phase 2 (the in-order merge: read shards, dedup decisions over precomputed keys) runs in one "
                  f"process at {p['merge_mb_per_s']} MB/s: {p['merge_hours']} h for 20.9 GB",
                  f"- total about {p['total_hours']} h, before the held-out split, replay mix and packing, which "
                  "run in the same process as the merge (tokenization is their cost)",
                  f"- dedup index: {p['index_bytes_per_kept_doc']} bytes per kept document (the only state that "
                  "grows with the corpus in the merge)"]
    lines += ["", m.get("note", "")]
    (out_dir / "prepare_scale.md").write_text("\n".join(lines).rstrip() + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=480_000, help="documents to generate (default 480,000: >= 1 GB)")
    ap.add_argument("--corpus", type=Path, help="reuse a corpus folder built before")
    ap.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, from {', '.join(SIDES)}")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--note", default="", help="a sentence added to the results (e.g. why the corpus is smaller)")
    ap.add_argument("--probe-memory", type=Path, metavar="CORPUS", help="only print the in-process path's peak RSS")
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        child(args.side, args.corpus, args.result)
        return
    if args.probe_memory:
        print(json.dumps(probe_memory(args.probe_memory)))
        return
    sides = [s for s in args.sides.split(",") if s]
    load_start = _load()
    tmp = Path(tempfile.mkdtemp(prefix="cptnb_scale_"))
    corpus = args.corpus
    seed = None
    if corpus is None:
        import prepare_throughput

        corpus = tmp / "corpus"
        t0 = time.perf_counter()
        built = prepare_throughput.build_corpus(corpus, args.docs, args.docs * 2_000)
        seed = built["seed"]
        print(f"corpus: {built} ({time.perf_counter() - t0:.0f} s)", flush=True)
    files = sorted(corpus.glob("*.jsonl"))
    docs = sum(sum(1 for _ in open(f, "rb")) for f in files)
    meta = {"docs": docs, "text_bytes": _corpus_bytes(corpus), "file_bytes": sum(f.stat().st_size for f in files),
            "files": len(files), "seed": seed or "reused corpus", "cpu": cpu_model(), "cores": os.cpu_count(),
            "python": platform.python_version(), "load_start": load_start,
            "when": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "note": args.note}
    results = {}
    for side in sides:
        res = tmp / f"{side}.json"
        with open(tmp / f"{side}.log", "w") as log:  # datatrove logs every task: keep it out of the console
            done = subprocess.run([sys.executable, __file__, "--side", side, "--corpus", str(corpus), "--result",
                                   str(res)], cwd=REPO, stderr=log)
        if done.returncode:
            sys.exit(f"{side} failed; its log: {tmp / f'{side}.log'}")
        results[side] = json.loads(res.read_text())
        print(f"{side}: {results[side]['wall_s']:.1f} s, peak RSS {results[side]['peak_rss_mb']:.0f} MB", flush=True)
        # Written after every side: a run of hours that is stopped still leaves the sides it finished.
        meta["load_end"] = _load()
        report = {"meta": meta, "summary": summarize(results, meta)}
        write_reports(report, args.out)
    print(json.dumps(report["summary"].get("projection"), indent=2))
    print(f"identical decisions: {report['summary']['identical_decisions']}")


if __name__ == "__main__":
    main()
