"""How close can an fp32 merged export come to the trained LoRA model? The floor set by fp32 itself.

The export's reload check compares the merged model's logits with the base + adapter model's, both computed in
float32. A LoRA merge can never make that difference zero: ``base(x) + B(A(x))`` and ``(W + BA) x`` round in
different places, through every layer. This script separates the parts, each as the largest |logit difference| on
the reload check's own texts (``cptnb.export.merge.CHECK_TEXTS``):

- ``kit_check``: fp32 merged vs fp32 base + adapter (what ``export`` reports and judges);
- ``reference_noise``: fp32 base + adapter vs the same weights evaluated in float64 (the reference's own
  arithmetic rounding, before any merge);
- ``merged_weights``: the fp32 merged weights vs base + adapter, both evaluated in float64 (only the rounding of
  the stored weights is left);
- ``best_fp32_weights``: the merge done in float64 and rounded once to fp32, evaluated in float64 (the closest
  any fp32 file can get);
- ``file_read_back``: the fp32 merged model saved as ``export`` saves it and reloaded with transformers, vs the
  same model before saving (the export's round-trip check: a faithful file gives 0).

It also records the largest |logit| and the fp32 spacing (ulp) there: a bar far below a few ulp of the largest
logit cannot be met by any fp32 computation that takes a different path.

The adapters: each ``--adapter RUN_DIR`` (a trained run: its recipe names the base); without one, a fresh LoRA
adapter of the forgetting recipe's shape (rank 16, every linear layer, tied embeddings trained) on smollm2-135m is
moved by seeded noise so that it changes the logits by several units, as training does.

    python benchmarks/merge_precision.py                                   # the seeded adapter
    python benchmarks/merge_precision.py --adapter runs/02_train --adapter runs/07_vocabulary/extended
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run from a checkout, with or without `pip install -e .`

from benchmarks._machine import cpu_model  # noqa: E402


def _seeded_adapter():
    """(PEFT model in fp32, tokenizer): the forgetting recipe's adapter moved by seeded noise."""
    import torch

    from cptnb.config import Recipe
    from cptnb.models.loading import load_model

    loaded = load_model(Recipe.from_sample("smollm2_vi_forgetting_cpu").model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in loaded.model.named_parameters():
            if "lora_B" in name:  # a fresh adapter's B is zero: no change at all
                p.copy_(torch.randn(p.shape, generator=gen) * 0.01)
            elif "modules_to_save" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.01)
    return loaded.model.float().eval(), loaded.tokenizer


def _trained_adapter(run_dir: str):
    """(PEFT model in fp32, tokenizer) of a trained LoRA run, loaded as ``export`` loads it."""
    from cptnb.export.config import ExportConfig
    from cptnb.export.locate import locate
    from cptnb.export.merge import _tokenizer_for, load_adapted

    facts = locate(ExportConfig(run_dir=run_dir))
    if facts.method == "full":
        raise SystemExit(f"{run_dir} is a full run: there is no adapter to merge")
    return load_adapted(facts.base_source, facts.trained_dir), _tokenizer_for(facts)


def _largest_diff(a: list, b: list) -> float:
    return max(float((x.double() - y.double()).abs().max()) for x, y in zip(a, b, strict=True))


def measure(adapted, tokenizer) -> dict:
    """The five differences (module docstring) for one PEFT model in fp32."""
    import numpy as np
    import torch

    from cptnb.export.merge import CHECK_TEXTS, _encode, _load_full_precision, _logits, _save_merged, merge_loaded

    encoded = _encode(tokenizer, CHECK_TEXTS)
    ref32 = _logits(adapted, encoded)
    adapted64 = copy.deepcopy(adapted).double()
    ref64 = [x.double() for x in _logits(adapted64, encoded)]
    with adapted.disable_adapter():
        effect = _largest_diff(ref32, _logits(adapted, encoded))
    merged64, _ = merge_loaded(adapted64, "fp32")  # merged in float64, rounded once to fp32
    best = [x.double() for x in _logits(merged64.double(), encoded)]
    del adapted64, merged64
    merged, tying = merge_loaded(adapted, "fp32")  # what export does
    kit = _logits(merged, encoded)
    with tempfile.TemporaryDirectory() as tmp:
        _save_merged(merged, tokenizer, Path(tmp), tying)
        read_back = _logits(_load_full_precision(tmp), encoded)
    merged_exact = [x.double() for x in _logits(copy.deepcopy(merged).double(), encoded)]
    scale = max(float(x.abs().max()) for x in ref64)
    return {
        "positions": sum(int(ids.shape[1]) for ids in encoded),
        "largest_abs_logit": round(scale, 3),
        "fp32_ulp_at_largest_logit": float(np.spacing(np.float32(scale))),
        "adapter_effect": round(effect, 3),
        "kit_check": _largest_diff(ref32, kit),
        "reference_noise": _largest_diff(ref32, ref64),
        "merged_weights": _largest_diff(ref64, merged_exact),
        "best_fp32_weights": _largest_diff(ref64, best),
        "file_read_back": _largest_diff(kit, read_back),
        "torch": torch.__version__,
    }


def _markdown(result: dict) -> str:
    from cptnb.tables import markdown_table

    rows = [[name, r["positions"], f"{r['largest_abs_logit']:.2f}", f"{r['fp32_ulp_at_largest_logit']:.2g}",
             f"{r['adapter_effect']:.2f}", f"{r['kit_check']:.2g}", f"{r['reference_noise']:.2g}",
             f"{r['merged_weights']:.2g}", f"{r['best_fp32_weights']:.2g}", f"{r['file_read_back']:.2g}"]
            for name, r in result["adapters"].items()]
    m = result["machine"]
    return (
        "# fp32 merge precision: what a merged export can match\n\n"
        "Largest |logit difference| over the reload check's texts. kit check: fp32 merged vs fp32 base + adapter "
        "(what `export` judges). reference noise: fp32 base + adapter vs the same weights in float64. merged "
        "weights: the stored fp32 merge vs base + adapter, both in float64. best fp32: the merge done in float64 "
        "and rounded once, in float64. file read back: the saved fp32 merge reloaded vs the same model before "
        "saving (the export's round-trip check). "
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {result['adapters'][next(iter(result['adapters']))]['torch']}."
        "\n\n"
        + markdown_table(["adapter", "positions", "largest logit", "fp32 ulp there", "adapter effect", "kit check",
                          "reference noise", "merged weights", "best fp32", "file read back"], rows, right=range(1, 10))
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", action="append", default=[], help="a trained LoRA run folder (repeatable)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    adapters = {}
    for run_dir in args.adapter or [None]:
        model, tokenizer = _trained_adapter(run_dir) if run_dir else _seeded_adapter()
        adapters[run_dir or "seeded (smollm2-135m, forgetting recipe's LoRA)"] = measure(model, tokenizer)
        del model
    result = {"benchmark": "merge_precision", "adapters": adapters,
              "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "merge_precision.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (args.out / "merge_precision.md").write_text(_markdown(result), encoding="utf-8")
    print(json.dumps(adapters, indent=2))


if __name__ == "__main__":
    main()
