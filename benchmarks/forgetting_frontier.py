"""The forgetting frontier measured on smollm2-135m (what the README's frontier section quotes).

Runs :func:`cptnb.train.sweep.run_sweep` on ``data_samples/recipes/smollm2_vi_forgetting_cpu.yaml`` with
the shares, alphas and held-out sizes given, and copies ``frontier.json`` / ``frontier.md`` /
``frontier.png`` to ``benchmarks/results/forgetting_frontier<suffix>.*``. On a shared, loaded CPU run it
with one thread per process (``OMP_NUM_THREADS=1``): under a load average of 17 on 2 cores that scored
held-out documents about five times faster than two threads.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/forgetting_frontier.py --shares 0 --alphas 0.5 \
        --domain-docs 2 --general-docs 10
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from cptnb.config import Recipe
from cptnb.train.sweep import SweepConfig, run_sweep

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="smollm2_vi_forgetting_cpu")
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--domain-docs", type=int, default=4)
    parser.add_argument("--general-docs", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=0.0, help="0 keeps the recipe's")
    parser.add_argument("--max-steps", type=int, default=0, help="0 keeps the recipe's")
    parser.add_argument("--suffix", default="", help="appended to the result file names")
    args = parser.parse_args()
    recipe = Recipe.from_sample(args.recipe)
    train = {k: v for k, v in (("learning_rate", args.learning_rate), ("max_steps", args.max_steps)) if v}
    recipe = recipe.replace(train=train)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SweepConfig(replay_shares=args.shares, alphas=args.alphas, heldout_domain_docs=args.domain_docs,
                          heldout_general_docs=args.general_docs, out_dir=tmp)
        payload = run_sweep(recipe, cfg)
        RESULTS.mkdir(exist_ok=True)
        for ext in ("json", "md", "png"):
            shutil.copy2(Path(tmp) / f"frontier.{ext}", RESULTS / f"forgetting_frontier{args.suffix}.{ext}")
    print("\n".join(payload["verdict"]))


if __name__ == "__main__":
    main()
