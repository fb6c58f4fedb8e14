"""Vocabulary extension on smollm2-135m and the sample Vietnamese corpus: fertility, and the equal-time comparison.

Part 1 (seconds): for several numbers of new tokens, tokens per word and per byte
of the Vietnamese training text, the held-out Vietnamese and the held-out English,
with the base tokenizer (the baseline, measured in the same run) and the extended
one; how many English documents tokenize differently; the learning time.

Part 2 (minutes): notebook 07 run headless with longer settings (the same code
the notebook runs): init comparison before training, then plain vs extended
LoRA + embeddings at equal optimizer steps, with the seconds each spent inside
optimizer steps (and its wall time), exact held-out bits per byte with
paired-bootstrap 95% intervals at the end, the approximate gap every EVAL_STEPS
steps, and the approximate gap at exactly equal training time.

    .venv/bin/python benchmarks/vocab_extension.py               # both parts
    .venv/bin/python benchmarks/vocab_extension.py --skip-runs   # part 1 only
    .venv/bin/python benchmarks/vocab_extension.py --runs-from runs/07_vocabulary  # part 2 from an executed notebook

Writes benchmarks/results/vocab_extension.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import cpu_model  # noqa: E402

from cptnb.config import ModelConfig  # noqa: E402
from cptnb.models.loading import load_tokenizer  # noqa: E402
from cptnb.paths import REPO_ROOT  # noqa: E402
from cptnb.tables import markdown_table  # noqa: E402
from cptnb.vocab import extend_tokenizer, extension_report, learn_extension  # noqa: E402


def _texts(path: Path) -> list[str]:
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    return [json.loads(line)["text"] for f in files for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]


def fertility_sweep(model: str, sizes: list[int]) -> list[dict]:
    tokenizer = load_tokenizer(ModelConfig(name=model))
    samples = REPO_ROOT / "data_samples"
    corpora = {"vi_train": _texts(samples / "vi"), "vi_heldout": _texts(samples / "heldout" / "vi_heldout.jsonl"),
               "en": _texts(samples / "en") + _texts(samples / "heldout" / "en_heldout.jsonl")}
    rows = []
    for n in sizes:
        t0 = time.perf_counter()
        ext = learn_extension(tokenizer, corpora["vi_train"], n)
        extended = extend_tokenizer(tokenizer, ext)
        seconds = time.perf_counter() - t0
        report = extension_report(tokenizer, extended, corpora, general="en", first_new_id=ext.base_size)
        rows.append({"new_tokens": n, "learn_seconds": round(seconds, 2), **{
            name: {"tokens_per_word_before": e["before"]["tokens_per_word"], "tokens_per_word_after": e["after"]["tokens_per_word"],
                   "tokens_per_byte_before": e["before"]["tokens_per_byte"], "tokens_per_byte_after": e["after"]["tokens_per_byte"],
                   "change": e["tokens_per_word_change"], "changed_docs": e["changed_docs"], "docs": e["before"]["docs"],
                   "new_id_share": e["after"]["new_id_share"]}
            for name, e in report["corpora"].items()}})
        print(f"{n:>5} new tokens: vi {rows[-1]['vi_train']['tokens_per_word_before']:.3f} -> "
              f"{rows[-1]['vi_train']['tokens_per_word_after']:.3f}, en changed docs {rows[-1]['en']['changed_docs']}")
    return rows


def notebook_runs(params: dict, out: Path) -> dict:
    from cptnb.notebooks import run_notebook

    t0 = time.perf_counter()
    run_notebook("07_vocabulary", out, params, timeout_s=3600)
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    results["wall_seconds"] = time.perf_counter() - t0
    return results


def markdown(payload: dict) -> str:
    lines = ["# Vocabulary extension: fertility and the equal-time comparison", "",
             f"{payload['machine']}, {payload['date']}, model {payload['model']}.", "", "## Fertility (tokens per word)", ""]
    rows = [[r["new_tokens"], f"{r['vi_train']['tokens_per_word_before']:.3f}", f"{r['vi_train']['tokens_per_word_after']:.3f}",
             f"{100 * r['vi_train']['change']:+.1f}%", f"{r['vi_heldout']['tokens_per_word_after']:.3f}",
             f"{r['en']['tokens_per_word_before']:.4f}", f"{r['en']['tokens_per_word_after']:.4f}",
             f"{r['en']['changed_docs']} / {r['en']['docs']}", f"{r['learn_seconds']:.1f}"] for r in payload["fertility"]]
    lines.append(markdown_table(["new tokens", "vi train before", "after", "change", "vi held-out after", "en before",
                                 "en after", "en docs changed", "learn s"], rows, right=range(9)))
    runs = payload.get("runs")
    if runs:
        lines += ["", "## Before training: init of the new rows (held-out bits per byte)", ""]
        init = runs["init"]
        lines.append(markdown_table(["init", *next(iter(init.values()))], [[m, *v.values()] for m, v in init.items()]))
        lines += ["", f"## Equal-time CPT ({runs['params']})", ""]
        lines.append(markdown_table(["run", "training-step seconds", "wall seconds", "steps", "text bytes trained on",
                                     "vi bits/byte", "en bits/byte"],
                                    [[n, f"{r['seconds']:.0f}",
                                      f"{r['wall_seconds']:.0f}" if "wall_seconds" in r else "",
                                      r["steps"], f"{r['train_bytes_seen']:,}",
                                      r["bits_per_byte"]["domain"], r["bits_per_byte"].get("general")]
                                     for n, r in runs["runs"].items()]))
        lines += ["", "Approximate domain gap (extended - plain, bits per byte) by step: "
                  + ", ".join(f"{s}: {g:+.4f}" for s, g in runs["gap_by_step"]), ""]
        lines += [f"- {line}" for line in runs["verdict"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 1000, 2000, 3000])
    parser.add_argument("--skip-runs", action="store_true")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--eval-steps", type=int, default=6)
    parser.add_argument("--heldout-docs", type=int, default=10)
    parser.add_argument("--runs-from", default="", help="an executed notebook 07 folder whose results.json to record "
                        "instead of running part 2 again (e.g. runs/07_vocabulary)")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    payload = {"machine": f"{cpu_model()}, {os.cpu_count()} cores", "date": dt.date.today().isoformat(),
               "model": args.model, "fertility": fertility_sweep(args.model, args.sizes)}
    if args.runs_from:
        runs = json.loads((Path(args.runs_from) / "results.json").read_text(encoding="utf-8"))
        runs.setdefault("params", f"notebook 07 as run in {args.runs_from}")
        payload["runs"] = runs
    elif not args.skip_runs:
        params = {"MODEL": args.model, "STEPS": args.steps, "EVAL_STEPS": args.eval_steps,
                  "HELDOUT_DOMAIN_DOCS": args.heldout_docs, "HELDOUT_GENERAL_DOCS": args.heldout_docs}
        runs = notebook_runs(params, REPO_ROOT / "runs" / "bench_vocab_extension")
        runs["params"] = ", ".join(f"{k}={v}" for k, v in params.items())
        payload["runs"] = runs
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab_extension.json").write_text(json.dumps(payload, indent=1, ensure_ascii=False, default=float))
    (out / "vocab_extension.md").write_text(markdown(payload), encoding="utf-8")
    print(markdown(payload))


if __name__ == "__main__":
    main()
