"""LoRA vs DoRA vs LoRA+ on the sample corpus: held-out Vietnamese bits per byte and seconds per step.

Each variant starts from the same smollm2-135m weights with the ``smollm2_vi_lora_cpu`` recipe's LoRA
settings (rank 16, alpha 32, every linear layer) but embeddings frozen (``train_embeddings: false``, so
only the adapters differ between variants, and a step costs less on a shared 2-core CPU), and trains the
same steps (10 by default, batch 1 of 256-token blocks of ``data_samples/vi``) with the recipe's learning
rate and schedule, through the kit's own path (``cptnb.models.load_model`` + ``cptnb.train.train``);
only ``model.use_dora`` and ``model.loraplus_lr_ratio`` differ:

- ``lora``: plain LoRA;
- ``dora``: ``use_dora: true`` (PEFT's DoRA);
- ``loraplus``: ``loraplus_lr_ratio: 16`` (PEFT's ``create_loraplus_optimizer``: B matrices at 16x the
  learning rate), the ratio its paper and LLaMA-Factory's docs suggest.

Held-out bits per byte is scored on ``data_samples/heldout/vi_heldout.jsonl`` (never trained on; 6 of its
documents by default, spread evenly, to fit a shared 2-core machine) with
the kit's scorer (``cptnb.evaluate.perplexity.score_texts``, windows of 1,536 tokens, stride 1,024), on the
base model once and on each trained model. Seconds per step is the median of the trainer's per-step
wall times after the first two steps (the trainer's ``tokens_per_second`` events).

    python benchmarks/lora_variants.py                      # writes benchmarks/results/lora_variants.{json,md}
    python benchmarks/lora_variants.py --model tiny-llama --steps 4 --heldout-docs 2 --out /tmp/lv   # a quick try
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run from a checkout, with or without `pip install -e .`

from benchmarks._machine import cpu_model  # noqa: E402

VARIANTS = {
    "lora": {},
    "dora": {"use_dora": True},
    "loraplus": {"loraplus_lr_ratio": 16},
}


def _heldout_texts() -> list[str]:
    from cptnb.paths import data_samples_dir

    path = data_samples_dir() / "heldout" / "vi_heldout.jsonl"
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _bits_per_byte(model, tokenizer, texts, eval_cfg) -> float:
    from cptnb.evaluate.perplexity import score_texts

    model.eval()
    score = score_texts(model, tokenizer, texts, eval_cfg.window_tokens, eval_cfg.stride_tokens, eval_cfg.batch_size,
                        progress=False)
    return float(score.bits_per_byte)


def run_variant(name: str, changes: dict, recipe, blocks, texts, steps: int) -> dict:
    from cptnb.models.loading import load_model
    from cptnb.train.trainer import train

    loaded = load_model(recipe.model.replace(**changes))
    with tempfile.TemporaryDirectory(prefix=f"lora-variants-{name}-") as out:
        cfg = recipe.train.replace(output_dir=out, max_steps=steps, eval_steps=0, save_steps=0)
        started = time.perf_counter()
        result = train(loaded, blocks, cfg)
        wall = time.perf_counter() - started
    tokens_per_step = len(blocks[0]["input_ids"]) * cfg.per_device_batch_size * cfg.gradient_accumulation_steps
    # Each event's tokens_per_second averages the last <= 10 step times; the events after step 2 skip warm-up.
    rates = [e["tokens_per_second"] for e in result.history if "tokens_per_second" in e and e["step"] > 2]
    bpb = _bits_per_byte(loaded.model, loaded.tokenizer, texts, recipe.eval)
    record = {
        "changes": changes,
        "trainable_params": loaded.trainable_params,
        "heldout_vi_bits_per_byte": round(bpb, 4),
        "final_train_loss": round(result.final_train_loss, 4),
        "median_seconds_per_step": round(tokens_per_step / statistics.median(rates), 3) if rates else None,
        "train_wall_seconds": round(wall, 1),
        "steps": result.steps,
    }
    del loaded, result
    gc.collect()
    return record


def run(steps: int, batch: int, variants: list[str], out: Path, heldout_docs: int = 0, model: str = "") -> dict:
    import torch

    from cptnb.config import Recipe
    from cptnb.data import clean_documents, pack_documents, read_documents
    from cptnb.models.loading import load_for_eval
    from cptnb.paths import data_samples_dir

    recipe = Recipe.from_sample("smollm2_vi_lora_cpu").replace(
        model={"dtype": "fp32", "train_embeddings": False}, train={"precision": "fp32", "per_device_batch_size": batch}
    )
    if model:  # e.g. tiny-llama, to try the script in seconds
        recipe = recipe.replace(model={"name": model})
    from cptnb.evaluate.heldout import evenly

    texts = evenly(_heldout_texts(), heldout_docs)  # all of them when heldout_docs is 0
    base_model, tokenizer = load_for_eval(recipe.model.name, dtype="fp32")
    base_bpb = _bits_per_byte(base_model, tokenizer, texts, recipe.eval)
    del base_model
    docs = list(clean_documents(read_documents([data_samples_dir() / "vi"])))
    blocks = pack_documents(docs, tokenizer, recipe.model.max_seq_len_tokens).dataset
    results = {}
    for name in variants:
        results[name] = run_variant(name, VARIANTS[name], recipe, blocks, texts, steps)
        print(name, json.dumps(results[name]), flush=True)
    lora_step = results.get("lora", {}).get("median_seconds_per_step")
    for record in results.values():
        step = record["median_seconds_per_step"]
        record["seconds_per_step_vs_lora"] = round(step / lora_step, 3) if step and lora_step else None
    train = recipe.train
    result = {
        "benchmark": "lora_variants",
        "model": recipe.model.name,
        "recipe": "smollm2_vi_lora_cpu (fp32)",
        "lora": {"rank": recipe.model.lora_rank, "alpha": recipe.model.lora_alpha,
                 "target_modules": recipe.model.target_modules, "train_embeddings": recipe.model.train_embeddings},
        "train": {"steps": steps, "per_device_batch_size": train.per_device_batch_size,
                  "block_tokens": recipe.model.max_seq_len_tokens, "learning_rate": train.learning_rate,
                  "embedding_learning_rate": train.effective_embedding_learning_rate,
                  "warmup_steps": train.warmup_steps, "lr_scheduler": train.lr_scheduler, "seed": train.seed},
        "blocks": len(blocks),
        "heldout": {"file": "data_samples/heldout/vi_heldout.jsonl", "documents": len(texts),
                    "window_tokens": recipe.eval.window_tokens, "stride_tokens": recipe.eval.stride_tokens},
        "base_heldout_vi_bits_per_byte": round(base_bpb, 4),
        "variants": results,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average_1m": os.getloadavg()[0],
                    "python": platform.python_version(), "torch": torch.__version__},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "lora_variants.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "lora_variants.md").write_text(_markdown(result), encoding="utf-8")
    return result


def _markdown(result: dict) -> str:
    from cptnb.tables import markdown_table

    rows = [["base (no training)", "", f"{result['base_heldout_vi_bits_per_byte']:.4f}", "", "", ""]]
    for name, v in result["variants"].items():
        step = v["median_seconds_per_step"]
        rows.append([name, f"{v['trainable_params']:,}", f"{v['heldout_vi_bits_per_byte']:.4f}",
                     f"{v['final_train_loss']:.3f}", f"{step:.2f}" if step else "-",
                     f"{v['seconds_per_step_vs_lora']:.2f}x" if v["seconds_per_step_vs_lora"] else "-"])
    t, m = result["train"], result["machine"]
    return (
        f"# LoRA vs DoRA vs LoRA+ ({result['model']}, sample corpus, CPU)\n\n"
        f"{t['steps']} steps of {t['per_device_batch_size']} x {t['block_tokens']} tokens, learning rate "
        f"{t['learning_rate']} (embeddings {t['embedding_learning_rate']}), {t['lr_scheduler']} after "
        f"{t['warmup_steps']} warm-up steps, seed {t['seed']}; LoRA rank {result['lora']['rank']} on every linear "
        f"layer, embeddings {'trained' if result['lora']['train_embeddings'] else 'frozen'}. Held-out Vietnamese: "
        f"{result['heldout']['documents']} documents never trained "
        f"on. Machine: {m['cpu']}, {m['cores']} cores, load average {m['load_average_1m']:.1f} at the end.\n\n"
        + markdown_table(["variant", "trainable", "held-out vi bits/byte", "final train loss", "s/step", "vs LoRA"],
                         rows, right=(1, 2, 3, 4, 5))
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per variant")
    parser.add_argument("--batch", type=int, default=1, help="blocks per step")
    parser.add_argument("--heldout-docs", type=int, default=6, help="held-out documents scored, spread evenly; 0: all")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from " + ",".join(VARIANTS))
    parser.add_argument("--model", default="", help="another model than the recipe's (tiny-llama: a quick try)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run(args.steps, args.batch, [v for v in args.variants.split(",") if v], args.out, args.heldout_docs, args.model)


if __name__ == "__main__":
    main()
