"""What the in-training task scores (cptnb.train.watch) cost against a training step, on smollm2-135m.

The recipe's model (LoRA rank 16 + trained embeddings, fp32, CPU) runs one 4 x 256 forward + backward (a
training step of the ``smollm2_vi_lora_cpu`` recipe, without the optimizer), then scores general_en's first N
items (the default in-training task, prepared once as ``TrainingWatch`` prepares it) for each N, then another
step; CPU seconds (process time, all threads) and wall seconds are recorded. The share of the training time
at the sample recipe follows: evaluations at steps 0, 12 and 24 of 24.

    python benchmarks/train_watch_cost.py                  # writes benchmarks/results/train_watch_cost.{json,md}
    python benchmarks/train_watch_cost.py --limits 4 --out /tmp/twc
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _timed(fn):
    cpu, wall = time.process_time(), time.monotonic()
    fn()
    return time.process_time() - cpu, time.monotonic() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limits", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    import torch

    from cptnb.config import EvalConfig, ModelConfig
    from cptnb.evaluate.scoring import prepare_task, score_prepared
    from cptnb.evaluate.suite import tasks_from
    from cptnb.models.loading import load_model

    loaded = load_model(ModelConfig(name="smollm2-135m", method="lora", train_embeddings=True))
    ids = torch.randint(0, 1000, (4, 256), generator=torch.Generator().manual_seed(0))

    def step():
        loaded.model.train()
        loaded.model(input_ids=ids, labels=ids).loss.backward()

    steps = [_timed(step)]
    (task,) = tasks_from(EvalConfig(), only=["general_en"])
    scored = []
    for limit in args.limits:
        prepared = prepare_task(loaded.tokenizer, task, limit)
        tokens = sum(len(ctx) + sum(len(c) for c in conts) for request in prepared.encoded for ctx, conts in request)
        cpu, wall = _timed(lambda p=prepared: score_prepared(loaded.model, loaded.tokenizer, p, 8, quiet=True))
        scored.append({"limit": limit, "items": prepared.n, "tokens": tokens, "cpu_s": cpu, "wall_s": wall})
    steps.append(_timed(step))
    step_cpu = sum(c for c, _ in steps) / len(steps)
    for row in scored:
        row["steps_per_evaluation"] = row["cpu_s"] / step_cpu
        row["share_of_sample_recipe"] = 3 * row["steps_per_evaluation"] / 24  # evaluations at 0, 12, 24 of 24 steps
    result = {"model": "smollm2-135m, LoRA r16 + embeddings, fp32", "load_average": os.getloadavg(),
              "training_step_cpu_s": [c for c, _ in steps], "training_step_wall_s": [w for _, w in steps],
              "general_en": scored}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_watch_cost.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    lines = ["# In-training task scores against a training step (smollm2-135m, CPU)", "",
             f"Load average at the end: {result['load_average'][0]:.1f}; training step (4 x 256, forward + backward): "
             f"{', '.join(f'{c:.1f}' for c, _ in steps)} CPU-s.", "",
             "| general_en items | tokens | CPU-s | training steps' worth | share of the sample recipe |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['items']} | {r['tokens']} | {r['cpu_s']:.1f} | {r['steps_per_evaluation']:.2f} | "
              f"{r['share_of_sample_recipe']:.1%} |" for r in scored]
    (out / "train_watch_cost.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
