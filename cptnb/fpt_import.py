"""Convert an FPT AI Studio hyperparameter JSON (seed 001's format) into a cptnb Recipe.

Every field of that format is either mapped to a recipe field or listed in
``notes`` with the reason it has no counterpart (preference-tuning knobs, UI
strategies), so nothing is dropped without a word.

Example::

    recipe, notes = import_fpt(json.load(open("hyperparams.json")), model="meta-llama/Llama-3.2-1B")
    recipe.to_yaml("recipe.yaml")
"""

from __future__ import annotations

from typing import Any

from cptnb.config import Recipe
from cptnb.errors import ConfigError

# FPT field -> (section, recipe field, converter)
_MAP: dict[str, tuple[str, str, Any]] = {
    "batch_size": ("train", "per_device_batch_size", int),
    "gradient_accumulation_steps": ("train", "gradient_accumulation_steps", int),
    "learning_rate": ("train", "learning_rate", float),
    "lr_scheduler_type": ("train", "lr_scheduler", str),
    "lr_warmup_steps": ("train", "warmup_steps", int),
    "epochs": ("train", "num_train_epochs", float),
    "max_sequence_length": ("model", "max_seq_len_tokens", int),
    "mixed_precision": (
        "train", "precision", lambda v: {"bf16": "bf16", "fp16": "fp16", "no": "fp32", "none": "fp32"}[v]
    ),
    "optimizer": ("train", "optimizer", lambda v: {"adamw": "adamw_torch", "adamw_8bit": "adamw_8bit"}.get(v, v)),
    "weight_decay": ("train", "weight_decay", float),
    "max_grad_norm": ("train", "max_grad_norm", float),
    "distributed_backend": ("train", "distributed_backend", str),
    "zero_stage": ("train", "zero_stage", int),
    "finetuning_type": ("model", "method", lambda v: {"full": "full", "lora": "lora", "qlora": "qlora"}[v]),
    "lora_rank": ("model", "lora_rank", int),
    "lora_alpha": ("model", "lora_alpha", int),
    "lora_dropout": ("model", "lora_dropout", float),
    "target_modules": (
        "model", "target_modules", lambda v: v if v == "all-linear" else [m.strip() for m in str(v).split(",")]
    ),
    "seed": ("train", "seed", int),
    "checkpoint_steps": ("train", "save_steps", int),
    "eval_steps": ("train", "eval_steps", int),
    "logging_steps": ("train", "logging_steps", int),
    "number_of_checkpoints": ("train", "save_total_limit", int),
    "disable_gradient_checkpointing": ("train", "gradient_checkpointing", lambda v: not bool(v)),
}

_NOT_APPLICABLE = {
    "dpo_label_smoothing": "preference tuning (DPO), not pretraining",
    "pref_beta": "preference tuning, not pretraining",
    "pref_ftx": "preference tuning, not pretraining",
    "pref_loss": "preference tuning, not pretraining",
    "simpo_gamma": "preference tuning (SimPO), not pretraining",
    "checkpoint_strategy": "cptnb saves every save_steps (checkpoint_steps) and at the end",
    "eval_strategy": "cptnb evaluates every eval_steps and at the end",
    "save_best_checkpoint": "CPT keeps the last checkpoints; pick the best from metrics.jsonl",
    "flash_attention_v2": "attention kernel is chosen by the backend (Unsloth/SDPA)",
    "full_determinism": "seeded; full determinism is not enforced",
}


def import_fpt(hyper: dict[str, Any], model: str = "meta-llama/Llama-3.2-1B") -> tuple[Recipe, list[str]]:
    """The recipe for ``hyper`` and a list of notes on fields that had no direct counterpart."""
    values: dict[str, dict[str, Any]] = {"model": {"name": model}, "train": {"max_steps": -1, "min_lr_ratio": 0.0}}
    notes: list[str] = []
    problems: list[str] = []
    for key, value in hyper.items():
        if key in _MAP:
            section, name, convert = _MAP[key]
            try:
                values.setdefault(section, {})[name] = convert(value)
            except (KeyError, ValueError, TypeError):
                problems.append(f"{key}: cannot use value {value!r}")
        elif key == "quantization_bit":
            if str(value) not in ("none", "None", "0"):
                if str(value) != "4":
                    problems.append(f"quantization_bit: only 4-bit (QLoRA) is supported, got {value!r}")
                values.setdefault("model", {})["_quant4"] = True
        elif key in _NOT_APPLICABLE:
            notes.append(f"{key}={value!r} not imported: {_NOT_APPLICABLE[key]}")
        else:
            notes.append(f"{key}={value!r} not recognised and not imported")
    if problems:
        raise ConfigError(problems, "FPT hyperparameters")
    if values["model"].pop("_quant4", False):
        if values["model"].get("method") == "full":
            raise ConfigError(["quantization_bit=4 needs finetuning_type lora (QLoRA), not full"],
                              "FPT hyperparameters")
        values["model"]["method"] = "qlora"
    if values["train"].get("warmup_steps") == 0:
        values["train"]["warmup_ratio"] = 0.0  # the seed asked for no warmup at all
    return Recipe.from_dict(values, where="FPT hyperparameters"), notes
