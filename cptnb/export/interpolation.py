"""Exporting an interpolated model (``ExportConfig.interpolation_alpha`` < 1): the adapter at alpha, and its card lines.

The merged model is interpolated in :func:`cptnb.export.merge.write_merged`. The
adapter is written by PEFT from the interpolated model (trained embeddings moved
toward the base by alpha) with ``lora_alpha`` multiplied by alpha in its config,
so that ``PeftModel.from_pretrained`` alone rebuilds the interpolated model.
"""

from __future__ import annotations

import json
from pathlib import Path

from cptnb.export.config import RunFacts


def write_interpolated_adapter(facts: RunFacts, alpha: float, adapter_out: Path) -> None:
    """Overwrite the copied adapter in ``adapter_out`` with the one that gives ``base + alpha * (trained - base)``."""
    from cptnb.export.merge import load_adapted
    from cptnb.models.interpolate import interpolate_in_place, scaled_lora_config

    adapted = interpolate_in_place(load_adapted(facts.base_source, facts.trained_dir), alpha)
    adapted.save_pretrained(str(adapter_out))  # LoRA A/B as trained, modules_to_save interpolated
    config_path = adapter_out / "adapter_config.json"
    original = json.loads((facts.trained_dir / "adapter_config.json").read_text(encoding="utf-8"))
    config_path.write_text(json.dumps(scaled_lora_config(original, alpha), indent=2), encoding="utf-8")


def card_lines(alpha: float, method: str, adapter_config: dict) -> list[str]:
    """The model card's "Weight interpolation" section; empty for a model exported as trained (alpha 1)."""
    if alpha == 1:
        return []
    lines = ["## Weight interpolation", "",
             f"This is not the model as trained: its weights are `base + {alpha:g} x (trained - base)` (weight "
             "interpolation toward the base model, WiSE-FT), chosen to give back part of the general ability that "
             "continued pretraining cost (see the frontier below, when embedded)."]
    if method == "full":
        lines.append("- every weight of the full run was interpolated with `torch.lerp(base, trained, alpha)`")
    else:
        lora_alpha = adapter_config.get("lora_alpha")
        lines.append(f"- the LoRA scale was multiplied by {alpha:g} (PEFT's `scale_layer`); in `adapter/` this is "
                     f"`lora_alpha` {lora_alpha} -> {lora_alpha * alpha if lora_alpha is not None else '?'} in "
                     "`adapter_config.json`, the A and B matrices are as trained")
        if adapter_config.get("modules_to_save"):
            lines.append("- the modules trained in full (embeddings) were interpolated the same way, with "
                         "`torch.lerp(base, trained, alpha)`")
    return lines + [""]
