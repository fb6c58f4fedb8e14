"""Throughput of cptnb's task scoring vs. lm-evaluation-harness on the same items, model and machine.

What it does
------------
1. Loads the sample tasks (``data_samples/eval``) and keeps a fixed subset: the
   first N items of each task (of each subject for exams_vi), N per task below.
   The subset is written as JSONL and exported as lm-eval task YAMLs
   (:func:`cptnb.evaluate.lmeval_export.export_lm_eval_tasks`), so both sides
   read the same items with the same prompts and few-shot examples.
2. Loads one model (default ``smollm2-135m``, LoRA-wrapped as the kit trains it)
   and, in this one process, times

   * ``cptnb``: :func:`cptnb.evaluate.scoring.evaluate_tasks` (prompts, tokenization,
     forward passes with each item's context run once, metrics);
   * ``lm-eval``: ``lm_eval.simple_evaluate`` with ``HFLM(pretrained=<the same
     model object>)`` over the exported YAMLs (``TaskManager(include_defaults=False)``
     built before the timer). The time spent inside ``HFLM.loglikelihood`` is
     reported too, as the harness's model-only time.

   Both use the same batch size (contexts per forward pass for cptnb, requests
   per forward pass for lm-eval) and the same torch thread count; each side
   runs ``--repeats`` times in ABBA order and its fastest run counts.
3. Checks that every item gets the same acc / acc_norm / acc_bytes on both
   sides and log-likelihoods within 1e-4, then writes
   ``benchmarks/results/eval_throughput.{json,md}``.

Usage::

    .venv/bin/python benchmarks/eval_throughput.py            # smollm2-135m, the subset below, writes results/
    .venv/bin/python benchmarks/eval_throughput.py --quick    # tiny-llama, 2 items per task, to a temp dir
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))  # sibling helpers, however the script is started
from _machine import cpu_model  # noqa: E402
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Items kept per task (per subject for exams_vi): about 35,000 tokens of lm-eval forward passes on smollm2-135m.
SUBSET = {"wikipediaqa_vi": 6, "exams_vi": 1, "comprehension_vi": 2, "general_en": 6, "lambada_vi": 10}
QUICK_SUBSET = {name: 2 for name in SUBSET}
GOAL_RATIO = 2.0


def subset_tasks(limits: dict[str, int]):
    """The sample tasks cut to their first items; marked for export as their own JSONL copies."""
    from cptnb.evaluate.tasks import load_tasks, subtasks

    chosen = []
    for task in load_tasks(REPO / "data_samples" / "eval"):
        if task.name in limits:
            items = [i for group in subtasks(task, limits[task.name]).values() for i in group]
            chosen.append(dataclasses.replace(task, items=items, schema="villm"))  # "villm": export writes the subset
    return chosen


def forward_tokens(tokenizer, tasks) -> dict[str, int]:
    """Tokens each side feeds the model: lm-eval runs context + choice per choice, cptnb the context once."""
    from cptnb.evaluate.scoring import encode_pair
    from cptnb.evaluate.tasks import context, continuations, fewshot_plan

    lm_eval_tokens = cptnb_tokens = 0
    for task in tasks:
        for item, shots in fewshot_plan(task):
            pairs = [encode_pair(tokenizer, context(task, item, shots), c) for c in continuations(task, item)]
            lm_eval_tokens += sum(len(ctx) + len(cont) - 1 for ctx, cont in pairs)
            cptnb_tokens += len(pairs[0][0]) + sum(len(cont) - 1 for _, cont in pairs)
    return {"lm_eval": lm_eval_tokens, "cptnb": cptnb_tokens}


def run_cptnb(model, tokenizer, tasks, batch_size: int) -> tuple[dict, dict]:
    from cptnb.evaluate.scoring import evaluate_tasks

    wall, cpu = time.perf_counter(), time.process_time()
    results = evaluate_tasks(model, tokenizer, tasks, batch_size=batch_size)
    timing = {"wall_seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu}
    return results, timing


def run_lm_eval(model, tokenizer, tasks, export_dir: Path, batch_size: int) -> tuple[dict, dict]:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    harness = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    manager = TaskManager(include_path=str(export_dir), include_defaults=False)
    inner = harness.loglikelihood
    spent = {"seconds": 0.0, "cpu_seconds": 0.0, "requests": 0}

    def timed_loglikelihood(requests, *args, **kwargs):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = inner(requests, *args, **kwargs)
        spent["seconds"] += time.perf_counter() - start
        spent["cpu_seconds"] += time.process_time() - start_cpu
        spent["requests"] += len(requests)
        return out

    harness.loglikelihood = timed_loglikelihood
    names = [t.name for t in tasks]
    wall, cpu = time.perf_counter(), time.process_time()
    out = simple_evaluate(model=harness, tasks=names, task_manager=manager, log_samples=True, fewshot_random_seed=1234)
    timing = {"wall_seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu,
              "loglikelihood_seconds": spent["seconds"], "loglikelihood_cpu_seconds": spent["cpu_seconds"],
              "requests": spent["requests"]}
    return out, timing


def compare(ours: dict, theirs: dict) -> dict:
    """Per item: same picks (acc, acc_norm, acc_bytes) and log-likelihood differences; per task: both metric sets."""
    worst, mismatches, per_task = 0.0, [], {}
    for name, result in ours.items():
        subtasks = [f"{name}_{s}" for s in result.subjects] if result.subjects else [name]
        samples = [s for sub in subtasks for s in sorted(theirs["samples"][sub], key=lambda s: s["doc_id"])]
        if len(samples) != len(result.items):
            mismatches.append(f"{name}: {len(samples)} lm-eval items vs {len(result.items)}")
            continue
        for sample, item in zip(samples, result.items):
            lls = [resp[0] for resp in sample["filtered_resps"]]
            mine = item["loglikelihoods"] if "loglikelihoods" in item else [item["loglikelihood"]]
            worst = max(worst, max(abs(a - b) for a, b in zip(lls, mine)))
            for metric in ("acc", "acc_norm", "acc_bytes"):
                if metric in item and item[metric] != int(sample[metric]):
                    mismatches.append(f"{name}/{item['id']}: {metric} {item[metric]} vs {sample[metric]}")
        agg = theirs["results"][name if name in theirs["results"] else subtasks[0]]
        per_task[name] = {"n": result.n, "cptnb": result.metrics,
                          "lm_eval": {m: agg[f"{m},none"] for m in result.metrics}}
    return {"identical": not mismatches and worst <= 1e-4, "max_abs_loglikelihood_diff": worst,
            "mismatches": mismatches, "per_task": per_task}


def write_markdown(path: Path, r: dict) -> None:
    c, e = r["cptnb"], r["lm_eval"]
    runs = "; ".join(f"{side} " + ", ".join(f"{t['wall_seconds']:.0f} s wall / {t['cpu_seconds']:.0f} s CPU (load {t['load_average_1min']})"
                                            for t in r[side]["runs"]) for side in ("cptnb", "lm_eval"))
    ok = "met" if r["goal_met"] else "NOT met"
    fmt = lambda metrics: ", ".join(f"{m} {v:.6g}" if m == "perplexity" else f"{m} {v:.4f}" for m, v in metrics.items())
    rows = "\n".join(f"| {name} | {t['n']} | {fmt(t['cptnb'])} | {fmt(t['lm_eval'])} |"
                     for name, t in r["comparison"]["per_task"].items())
    text = f"""# eval_throughput: cptnb task scoring vs. lm-evaluation-harness {r['versions']['lm_eval']}

Model `{r['model']}` ({r['method']}), CPU, {r['threads']} torch thread(s), batch size {r['batch_size']} on both sides;
{len(c['runs'])} timed runs per side in ABBA order, the fastest of each side shown (all runs: {runs}).
Items: {r['items']} ({', '.join(f'{k} {v}' for k, v in r['subset_items'].items())}; exams_vi = first {r['subset_per_task']['exams_vi']} per subject), the same prompts and few-shot examples on both sides (exported YAMLs).

| | cptnb | lm-eval |
|---|---:|---:|
| wall seconds | {c['wall_seconds']:.1f} | {e['wall_seconds']:.1f} |
| items/s (wall) | {c['items_per_second']:.3f} | {e['items_per_second']:.3f} |
| CPU seconds (this process) | {c['cpu_seconds']:.1f} | {e['cpu_seconds']:.1f} |
| items/s (CPU time) | {c['cpu_items_per_second']:.3f} | {e['cpu_items_per_second']:.3f} |
| model-phase seconds (CPU) | {c['wall_seconds']:.1f} ({c['cpu_seconds']:.1f}), all of it | {e['loglikelihood_seconds']:.1f} ({e['loglikelihood_cpu_seconds']:.1f}) inside `HFLM.loglikelihood`, {e['requests']} requests |
| tokens through the model | {r['forward_tokens']['cptnb']:,} | {r['forward_tokens']['lm_eval']:,} |

**Throughput ratio cptnb / lm-eval: {r['ratio_wall']:.2f}x wall, {r['ratio_cpu']:.2f}x CPU time** (goal >= {GOAL_RATIO:g}x on wall time: {ok}).
Against lm-eval's model phase only (all of cptnb's time vs. the time inside `HFLM.loglikelihood`): {r['ratio_model_phase']:.2f}x wall, {r['ratio_model_phase_cpu']:.2f}x CPU.

Scores identical: **{'yes' if r['comparison']['identical'] else 'NO'}** — every item has the same acc / acc_norm / acc_bytes, largest log-likelihood difference {r['comparison']['max_abs_loglikelihood_diff']:.2e} (tolerance 1e-4).

| task | n | cptnb | lm-eval |
|---|---:|---|---|
{rows}

Notes:
- Where the speed comes from: lm-eval runs `context + choice` once per choice; cptnb runs each item's context once with a KV cache and only the choice tokens on top ({r['forward_tokens']['lm_eval'] / max(1, r['forward_tokens']['cptnb']):.1f}x fewer tokens here), batched across items.
- lm-eval's wall time includes its own per-run overhead (reading the exported JSONL with `datasets`, environment info); its model-phase time alone is in the table.
- Load average {r['load_average']['start']} at the start and {r['load_average']['end']} at the end on {r['machine']['logical_cpus']} logical CPUs: where it exceeds the CPU count other work shared the machine, so wall times are noisy and CPU-time throughput is the steadier comparison.

Machine and versions:

- CPU: {r['machine']['cpu']} ({r['machine']['logical_cpus']} logical CPUs visible)
- Python {r['versions']['python']}; torch {r['versions']['torch']}, transformers {r['versions']['transformers']}, peft {r['versions']['peft']}, lm-eval {r['versions']['lm_eval']}
- Platform: {r['machine']['platform']}
- Command: `{r['command']}`
- Date: {r['date']}
"""
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="model alias or path (cptnb.models.loading.load_model)")
    parser.add_argument("--method", default="lora", help="lora wraps the model in PEFT as training does; full leaves it plain")
    parser.add_argument("--batch-size", type=int, default=8, help="contexts (cptnb) / requests (lm-eval) per forward pass")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides (1 is steadiest on a shared CPU)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per side, in ABBA order; the fastest counts")
    parser.add_argument("--quick", action="store_true", help="tiny-llama, 2 items per task, results to a temp dir")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results, or a temp dir with --quick)")
    args = parser.parse_args(argv)

    import lm_eval
    import peft
    import torch
    import transformers

    from cptnb.config import ModelConfig
    from cptnb.evaluate.lmeval_export import export_lm_eval_tasks
    from cptnb.models.loading import load_model

    torch.set_num_threads(args.threads)
    limits = QUICK_SUBSET if args.quick else SUBSET
    model_name = "tiny-llama" if args.quick else args.model
    out_dir = Path(args.out) if args.out else (Path(tempfile.mkdtemp()) if args.quick else REPO / "benchmarks" / "results")
    out_dir.mkdir(parents=True, exist_ok=True)

    loaded = load_model(ModelConfig(name=model_name, method=args.method))
    model, tokenizer = loaded.model, loaded.tokenizer
    tasks = subset_tasks(limits)
    export_dir = Path(tempfile.mkdtemp(prefix="cptnb-eval-bench-"))
    export_lm_eval_tasks(tasks, export_dir)
    with torch.inference_mode():  # warm-up so that neither side pays torch's first-call costs
        model(input_ids=torch.tensor([tokenizer.encode("Xin chào các bạn")]))
    load_start = os.getloadavg()

    # ABBA order (cptnb, lm-eval, lm-eval, cptnb, ...) so that drifting load hits both sides alike; best run kept.
    runs: dict[str, list[dict]] = {"cptnb": [], "lm_eval": []}
    for repeat in range(args.repeats):
        for side in (("cptnb", "lm_eval") if repeat % 2 == 0 else ("lm_eval", "cptnb")):
            if side == "cptnb":
                ours, timing = run_cptnb(model, tokenizer, tasks, args.batch_size)
            else:
                theirs, timing = run_lm_eval(model, tokenizer, tasks, export_dir, args.batch_size)
            timing["load_average_1min"] = round(os.getloadavg()[0], 2)
            runs[side].append(timing)
    cptnb_time = dict(min(runs["cptnb"], key=lambda t: t["wall_seconds"]), runs=runs["cptnb"])
    lm_eval_time = dict(min(runs["lm_eval"], key=lambda t: t["wall_seconds"]), runs=runs["lm_eval"])
    items = sum(r.n for r in ours.values())
    for timing in (cptnb_time, lm_eval_time, *runs["cptnb"], *runs["lm_eval"]):
        timing["items_per_second"] = items / timing["wall_seconds"]
        timing["cpu_items_per_second"] = items / timing["cpu_seconds"]
    result = {
        "benchmark": "eval_throughput",
        "model": model_name, "method": args.method, "threads": args.threads, "batch_size": args.batch_size,
        "subset_per_task": limits, "subset_items": {name: r.n for name, r in ours.items()}, "items": items,
        "forward_tokens": forward_tokens(tokenizer, tasks),
        "cptnb": cptnb_time, "lm_eval": lm_eval_time,
        "ratio_wall": cptnb_time["items_per_second"] / lm_eval_time["items_per_second"],
        "ratio_cpu": cptnb_time["cpu_items_per_second"] / lm_eval_time["cpu_items_per_second"],
        # The harshest comparison: all of cptnb's time against only lm-eval's time inside the model calls.
        "ratio_model_phase": lm_eval_time["loglikelihood_seconds"] / cptnb_time["wall_seconds"],
        "ratio_model_phase_cpu": lm_eval_time["loglikelihood_cpu_seconds"] / cptnb_time["cpu_seconds"],
        "goal_ratio": GOAL_RATIO,
        "comparison": compare(ours, theirs),
        "load_average": {"start": [round(x, 2) for x in load_start], "end": [round(x, 2) for x in os.getloadavg()]},
        "machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "lm_eval": getattr(lm_eval, "__version__", "0.4.13")},
        "command": " ".join([".venv/bin/python", "benchmarks/eval_throughput.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    result["goal_met"] = result["ratio_wall"] >= GOAL_RATIO
    (out_dir / "eval_throughput.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    write_markdown(out_dir / "eval_throughput.md", result)
    print(f"cptnb {cptnb_time['items_per_second']:.3f} items/s, lm-eval {lm_eval_time['items_per_second']:.3f} items/s, "
          f"ratio {result['ratio_wall']:.2f}x (CPU {result['ratio_cpu']:.2f}x); identical: {result['comparison']['identical']}; "
          f"written to {out_dir}")
    return result


if __name__ == "__main__":
    main()
