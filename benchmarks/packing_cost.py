"""What ``data.packing: document`` costs against ``concat``: seconds per training step on the CPU.

The same packed blocks of the sample Vietnamese corpus (``data_samples/vi``, blocks of 256 tokens, as the
``smollm2_vi_lora_cpu`` recipe packs them) train the recipe's model (smollm2-135m, LoRA rank 16 on every
linear layer, fp32; embeddings frozen, so that a step costs less on a shared 2-core CPU and the attention
is a larger share of it) through three batch layouts, in the same process:

- ``concat``: TRL's default collator (all-ones attention mask: SDPA's causal fast path);
- ``document_rows``: :func:`cptnb.train.document_packing.document_collator`, what ``train`` uses on SDPA /
  eager: position ids restarting per document, no mask, so transformers builds a block-diagonal mask;
- ``document_flattened``: TRL's padding-free collator, what ``train`` uses for FlashAttention and Unsloth;
  on SDPA (measured here) it attends over one row of batch x block tokens under a dense mask.

A step is collate + forward + backward + AdamW step. Rounds interleave the layouts (one step of each per
round, after one warm-up round), so load on a shared machine hits them alike; the median step is reported.

    python benchmarks/packing_cost.py              # writes benchmarks/results/packing_cost.{json,md}
    python benchmarks/packing_cost.py --rounds 2 --out /tmp/pc   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run from a checkout, with or without `pip install -e .`

from benchmarks._machine import cpu_model  # noqa: E402

LAYOUTS = ("concat", "document_rows", "document_flattened")


def _collators(pad_token_id: int) -> dict:
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from cptnb.train.document_packing import document_collator, flat_collator

    plain = DataCollatorForLanguageModeling(pad_token_id=pad_token_id)
    return {
        "concat": lambda rows: plain([{"input_ids": r["input_ids"]} for r in rows]),
        "document_rows": document_collator(pad_token_id),
        "document_flattened": flat_collator(pad_token_id),
    }


def run(rounds: int, batch: int, out: Path) -> dict:
    import torch

    from cptnb.config import Recipe
    from cptnb.data import clean_documents, pack_documents, read_documents
    from cptnb.models.loading import load_model
    from cptnb.paths import data_samples_dir

    torch.manual_seed(0)
    recipe = Recipe.from_sample("smollm2_vi_lora_cpu")
    loaded = load_model(recipe.model.replace(dtype="fp32", train_embeddings=False))
    model = loaded.model.train()
    model.config.use_cache = False  # as the Trainer sets it
    block = recipe.model.max_seq_len_tokens
    docs = list(clean_documents(read_documents([data_samples_dir() / "vi"])))
    packed = pack_documents(docs, loaded.tokenizer, block, packing="document")
    rows = [packed.dataset[i] for i in range(len(packed.dataset))]
    collators = _collators(loaded.tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    seconds: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    losses: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    targets: dict[str, int] = {}
    for r in range(rounds + 1):  # round 0 warms up
        chosen = [rows[(r * batch + i) % len(rows)] for i in range(batch)]
        for name in LAYOUTS:
            start = time.perf_counter()
            inputs = collators[name](chosen)
            inputs["use_cache"] = False
            loss = model(**inputs).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            elapsed = time.perf_counter() - start
            if r:
                seconds[name].append(elapsed)
                losses[name].append(float(loss))
            targets[name] = int((inputs["labels"][:, 1:] != -100).sum())
    concat = statistics.median(seconds["concat"])
    result = {
        "benchmark": "packing_cost",
        "model": f"{recipe.model.name} ({recipe.model.method}, rank {recipe.model.lora_rank}, embeddings frozen, fp32)",
        "attention": model.config._attn_implementation,
        "block_tokens": block,
        "batch_blocks": batch,
        "blocks": len(rows),
        "documents": packed.num_docs,
        "pieces_per_block": round(packed.pieces / max(len(rows), 1), 2),
        "timed_rounds": rounds,
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average_1m": os.getloadavg()[0],
                    "python": platform.python_version(), "torch": torch.__version__},
        "layouts": {
            name: {
                "median_seconds_per_step": round(statistics.median(seconds[name]), 4),
                "tokens_per_second": round(batch * block / statistics.median(seconds[name]), 1),
                "cost_vs_concat_percent": round(100 * (statistics.median(seconds[name]) / concat - 1), 1),
                "targets_per_step": targets[name],
                "mean_loss": round(statistics.mean(losses[name]), 4),
                "seconds": [round(s, 4) for s in seconds[name]],
            }
            for name in LAYOUTS
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "packing_cost.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "packing_cost.md").write_text(_markdown(result), encoding="utf-8")
    return result


def _markdown(result: dict) -> str:
    from cptnb.tables import markdown_table

    rows = [[name, f"{v['median_seconds_per_step']:.3f}", f"{v['tokens_per_second']:.0f}",
             f"{v['cost_vs_concat_percent']:+.1f}%", v["targets_per_step"], f"{v['mean_loss']:.3f}"]
            for name, v in result["layouts"].items()]
    machine = result["machine"]
    return (
        "# Document packing cost (CPU)\n\n"
        f"{result['model']}, {result['attention']} attention, {result['batch_blocks']} blocks of "
        f"{result['block_tokens']} tokens per step ({result['pieces_per_block']} document pieces per block on "
        f"average, {result['documents']} documents in {result['blocks']} blocks); median of "
        f"{result['timed_rounds']} interleaved steps per layout after one warm-up round. Machine: "
        f"{machine['cpu']}, {machine['cores']} cores, load average {machine['load_average_1m']:.1f} at the end.\n\n"
        + markdown_table(["layout", "s/step", "tokens/s", "vs concat", "targets/step", "mean loss"], rows)
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="timed steps per layout")
    parser.add_argument("--batch", type=int, default=4, help="blocks per step (the recipe's per_device_batch_size)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = run(args.rounds, args.batch, args.out)
    print(json.dumps({k: v["median_seconds_per_step"] for k, v in result["layouts"].items()}))


if __name__ == "__main__":
    main()
