"""Language profiles (issue 19): do vi and en decide exactly as before, and what do th/id keep?

What it does
------------
1. Builds the prepare benchmark corpus (``prepare_throughput.build_corpus``: Vietnamese documents recombined
   from ``data_samples/vi``, ~2% English, planted exact and near copies) in a temporary folder.
2. Extracts the package as it was before the profiles (``--baseline``, default the commit before issue 19's
   first one) with ``git archive`` into a temporary folder, and runs the same child code on both packages, each
   in its own process:

   * the corpus stream ``prepare()`` runs (read -> clean -> language id -> quality filters -> exact + near dedup)
     with ``DataConfig()`` defaults (vi): every kept document's id and SHA-256 of its text, drops per reason;
   * ``quality_reason`` with the vi and the en filter defaults on every cleaned document (whatever its
     language, for more cases): the reason and the SHA-256 of the text it keeps;
   * the dedup/decontamination words (``textkey.normalized_words``) of every cleaned document.

3. Compares them document by document, and records (current code only) how the th and id profiles treat
   their own sample and held-out documents, and the Thai segmenter's speed.
4. Writes ``benchmarks/results/language_profiles.{json,md}``.

Usage::

    .venv/bin/python benchmarks/language_profiles.py                 # 5,000 documents
    .venv/bin/python benchmarks/language_profiles.py --docs 20000 --baseline 6967bb5
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRST_ISSUE19_COMMIT = "55f1cbe"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def child(corpus: Path, out: Path) -> None:
    """Run in a fresh process whose sys.path starts with the package under test."""
    import cptnb
    from cptnb.config import DataConfig
    from cptnb.data import textkey
    from cptnb.data.clean import clean_text
    from cptnb.data.filters import FilterConfig, quality_reason
    from cptnb.data.pipeline import CorpusStream

    start = time.perf_counter()
    cfg = DataConfig(sources=[str(corpus)], replay_sources=[], heldout_domain=[], heldout_general=[], num_proc=1)
    stream = CorpusStream(cfg, cfg.sources, cfg.language, None)
    kept = [[d.id, _sha(d.text)] for d in stream.documents()]
    stream_s = time.perf_counter() - start
    raw = [json.loads(line) for f in sorted(corpus.glob("*.jsonl")) for line in f.read_text("utf-8").splitlines()]
    configs = {"vi": FilterConfig.for_language("vi"), "en": FilterConfig.for_language("en")}
    filters: dict[str, list] = {lang: [] for lang in configs}
    words = []
    start = time.perf_counter()
    for row in raw:
        text = clean_text(row["text"])
        for lang, fcfg in configs.items():
            reason, kept_text = quality_reason(text, fcfg)
            filters[lang].append([row["id"], reason, _sha(kept_text)])
        words.append(_sha(b" ".join(textkey.normalized_words(text)).decode("utf-8")))
    seconds = {"stream": round(stream_s, 1), "filters": round(time.perf_counter() - start, 1)}
    out.write_text(json.dumps({"package": str(Path(cptnb.__file__).parent), "kept": kept,
                               "drops": stream.drops.by_reason(), "filters": filters, "words": words,
                               "seconds": seconds}))


def _samples() -> dict:
    """Current code only: each new profile on its own sample and held-out texts, and segmenter speed."""
    sys.path.insert(0, str(REPO))
    from cptnb.data.filters import FilterConfig, quality_reason
    from cptnb.data.languages import Segmenter

    out = {}
    for lang in ("th", "id"):
        cfg = FilterConfig.for_language(lang)
        for part, files in (("corpus", sorted((REPO / "data_samples" / lang).glob("*.jsonl"))),
                            ("heldout", [REPO / "data_samples" / "heldout" / f"{lang}_heldout.jsonl"])):
            texts = [json.loads(x)["text"] for f in files for x in f.read_text("utf-8").splitlines() if x.strip()]
            reasons = [quality_reason(t, cfg)[0] for t in texts]
            out[f"{lang}_{part}"] = {"docs": len(texts), "kept": reasons.count(None),
                                     "dropped": {r: reasons.count(r) for r in set(reasons) if r}}
            if lang == "th" and part == "corpus":
                text = "\n\n".join(texts)
                start = time.perf_counter()
                n = len(Segmenter("thai").words(text))
                secs = time.perf_counter() - start
                en_cfg = FilterConfig.for_language("en")
                out["thai_segmenter"] = {"chars": len(text), "words": n, "whitespace_tokens": len(text.split()),
                                         "chars_per_second": round(len(text) / secs)}
                out["th_corpus_under_en_profile_kept"] = sum(quality_reason(t, en_cfg)[0] is None for t in texts)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--baseline", default=f"{FIRST_ISSUE19_COMMIT}^", help="commit of the package before profiles")
    ap.add_argument("--child", nargs=2, metavar=("CORPUS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]))
        return
    sys.path.insert(0, str(REPO / "benchmarks"))
    from prepare_throughput import build_corpus

    tmp = Path(tempfile.mkdtemp(prefix="cptnb_langprof_"))
    meta = build_corpus(tmp / "corpus", args.docs, 0)
    baseline = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout.strip()
    old_root = tmp / "baseline"
    old_root.mkdir()
    archive = subprocess.run(["git", "archive", baseline, "cptnb"], cwd=REPO, check=True, capture_output=True).stdout
    (tmp / "old.tar").write_bytes(archive)
    with tarfile.open(tmp / "old.tar") as tar:
        tar.extractall(old_root)
    results = {}
    for side, root in (("baseline", old_root), ("current", REPO)):
        env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        out = tmp / f"{side}.json"
        # PYTHONPATH comes before site-packages (and the editable install), so `import cptnb` is that side's.
        subprocess.run([sys.executable, __file__, "--child", str(tmp / "corpus"), str(out)], cwd=tmp, env=env,
                       check=True)
        results[side] = json.loads(out.read_text())
    old, new = results["baseline"], results["current"]
    assert old["package"].startswith(str(old_root)) and new["package"].startswith(str(REPO)), (old["package"])
    same = {
        "stream_kept": old["kept"] == new["kept"],
        "stream_drops": old["drops"] == new["drops"],
        "filters_vi": old["filters"]["vi"] == new["filters"]["vi"],
        "filters_en": old["filters"]["en"] == new["filters"]["en"],
        "dedup_words": old["words"] == new["words"],
    }
    differing = {k: sum(a != b for a, b in zip(old["filters"][k], new["filters"][k])) for k in ("vi", "en")}
    report = {
        "corpus": meta, "baseline_commit": baseline, "identical": same, "filters_differing_docs": differing,
        "stream": {"kept": len(new["kept"]), "drops": new["drops"]},
        "filter_reasons_vi": _count(new["filters"]["vi"]), "filter_reasons_en": _count(new["filters"]["en"]),
        "seconds": {"baseline": old["seconds"], "current": new["seconds"]},
        "samples": _samples(),
        "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
    }
    res = REPO / "benchmarks" / "results"
    (res / "language_profiles.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    (res / "language_profiles.md").write_text(_markdown(report))
    print(_markdown(report))


def _count(rows: list) -> dict:
    out: dict = {}
    for _, reason, _ in rows:
        out[str(reason)] = out.get(str(reason), 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _markdown(r: dict) -> str:
    s = r["samples"]
    lines = [
        "# Language profiles: vi and en unchanged, th and id on their samples", "",
        f"Prepare benchmark corpus: {r['corpus']['docs']:,} documents ({r['corpus']['bytes'] / 1e6:.1f} MB, "
        f"{r['corpus']['exact_pairs']} exact and {r['corpus']['near_pairs']} near copies planted, "
        f"{r['corpus']['english_docs']} English). Baseline: the package at `{r['baseline_commit']}` (before the "
        f"profiles), run in its own process on the same corpus. {r['machine']}.", "",
        "| compared, document by document | identical |", "| --- | --- |",
    ]
    names = {"stream_kept": "prepare stream (vi): kept ids and text SHA-256", "stream_drops": "prepare stream: drops "
             "per reason", "filters_vi": "quality_reason, vi defaults, every document", "filters_en":
             "quality_reason, en defaults, every document", "dedup_words": "dedup/decontam words of every document"}
    lines += [f"| {names[k]} | {'yes' if v else 'NO'} |" for k, v in r["identical"].items()]
    lines += ["", f"Stream: {r['stream']['kept']:,} kept; drops {r['stream']['drops']}.",
              f"Seconds (stream, filters): baseline {r['seconds']['baseline']}, current {r['seconds']['current']}.",
              "", "| sample | documents | kept | dropped |", "| --- | ---: | ---: | --- |"]
    for key in ("th_corpus", "th_heldout", "id_corpus", "id_heldout"):
        lines.append(f"| {key} | {s[key]['docs']} | {s[key]['kept']} | {s[key]['dropped'] or '-'} |")
    seg = s["thai_segmenter"]
    lines += ["", f"Thai corpus under the English profile (whitespace words): {s['th_corpus_under_en_profile_kept']} "
              f"of {s['th_corpus']['docs']} kept. Thai segmenter (PyThaiNLP newmm): {seg['words']:,} words where "
              f"whitespace gives {seg['whitespace_tokens']:,} tokens, {seg['chars_per_second']:,} characters/s on one "
              "core of the loaded machine."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
