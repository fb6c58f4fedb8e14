"""A rehearsal: a few real training steps of a recipe on this machine, on its model's shape with random weights.

:func:`rehearse` runs the recipe through the same :func:`cptnb.train.run.run_recipe`
(data preparation, ``load_model``, ``train()``) a real run takes, so a wrong data
path, a target module the model lacks, a precision this stack refuses or a
checkpoint that does not resume shows on a laptop, before GPUs are rented. The
weights are random (no download); the architecture comes from the model's own
config, or its shape shipped with the kit (:mod:`cptnb.planner.known_shapes`).
What cannot run here is shrunk, each change with its reason: fewer layers (then a
smaller vocabulary, then narrower layers) until the planner's estimate fits
``memory_budget_bytes``, shorter blocks, smaller batches, one process. Then:

1. train ``steps`` optimizer steps, saving a checkpoint halfway and at the end;
2. delete the last checkpoint and resume from the halfway one, as after a crash;
3. compare the resumed losses with the uninterrupted ones.

Example::

    result = rehearse(Recipe.from_yaml("data_samples/recipes/llama32_1b_vi_full_8gpu.yaml"))
    print(result.markdown())
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from cptnb.config import Recipe
from cptnb.errors import CptnbError, ModelNotAvailableError
from cptnb.planner.memory import GiB, Hardware, estimate_memory
from cptnb.planner.shape import shape_from_config

log = logging.getLogger(__name__)

# The planner's estimate for the rehearsed model must fit this: with the 0.5 GiB runtime allowance, about 30M
# parameters, which take a few seconds a step on two busy CPU cores.
REHEARSAL_MEMORY_BYTES = 1 * GiB
REHEARSAL_BLOCK_TOKENS = 64  # blocks longer than this are cut: a rehearsal checks the path, not the speed
REHEARSAL_MIN_LAYERS = 2  # two layers still exercise per-layer code (checkpointing, FSDP wrapping) once


@dataclass
class Rehearsal:
    """What a rehearsal ran, what it changed to run here, and whether resuming continued the curve."""

    model: str  # the recipe's model.name
    shape_origin: str  # where the architecture came from (a folder, a hub id, or a shipped shape)
    params_rehearsed: int  # parameters of the random-weight model that trained
    params_recipe: int  # parameters of the recipe's model
    changes: list[str]  # each thing shrunk or swapped, with why
    steps: int  # optimizer steps of the uninterrupted run
    resumed_from_step: int  # checkpoint the second run continued from
    losses: list[float]  # train loss per step, uninterrupted run
    resumed_losses: list[float]  # train loss of the steps after the checkpoint, resumed run
    seconds: float  # wall time of the whole rehearsal
    output_dir: Path  # where the runs were written (removed afterwards unless kept)
    warnings: list[str] = field(default_factory=list)  # problems found

    @property
    def resume_gap(self) -> float:
        """Largest difference between the resumed losses and the uninterrupted run's at the same steps."""
        tail = self.losses[self.resumed_from_step:]
        return max((abs(a - b) for a, b in zip(tail, self.resumed_losses)), default=math.inf)

    def markdown(self) -> str:
        share = 100 * self.params_rehearsed / max(self.params_recipe, 1)
        lines = [
            f"## Rehearsal: {self.model}",
            "",
            f"- shape from {self.shape_origin}; random weights, {self.params_rehearsed:,} of "
            f"{self.params_recipe:,} parameters ({share:.1f}%)",
            f"- {self.steps} steps, losses {', '.join(f'{x:.3f}' for x in self.losses)}",
            f"- resumed from step {self.resumed_from_step}: losses "
            f"{', '.join(f'{x:.3f}' for x in self.resumed_losses)} (largest gap {self.resume_gap:.2e})",
            f"- {self.seconds:.0f} s on this machine",
        ]
        if self.changes:
            lines += ["", "### Changed to run here", "", *(f"- {c}" for c in self.changes)]
        if self.warnings:
            lines += ["", "### Warnings", "", *(f"- {w}" for w in self.warnings)]
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self.markdown()

    def _repr_markdown_(self) -> str:
        return self.markdown()


def _tokenizer_for(recipe: Recipe, changes: list[str]):
    """The recipe's tokenizer, or tiny-llama's (same ids for every model) when it cannot be had here."""
    from cptnb.config import ModelConfig
    from cptnb.models.loading import load_tokenizer

    try:
        return load_tokenizer(recipe.model)
    except ModelNotAvailableError:
        stand_in = load_tokenizer(ModelConfig(name="tiny-llama", cache_dir=recipe.model.cache_dir))
        changes.append(f"tokenizer: {recipe.model.name}'s is not available here; tiny-llama's byte-level BPE "
                       f"({len(stand_in):,} tokens) stands in, so token counts differ from the real run")
        return stand_in


def _estimate(config, recipe: Recipe) -> float:
    shape = shape_from_config(config, "rehearsal")
    return estimate_memory(shape, recipe, hardware=Hardware("cpu", 1, "fp32", 4), strategy="single",
                           shape=shape).total_bytes


def shrink_config(config, recipe: Recipe, budget_bytes: float, min_vocab: int) -> list[str]:
    """Shrink ``config`` in place until the planner's CPU estimate for ``recipe`` fits ``budget_bytes``.

    Layers first (down to :data:`REHEARSAL_MIN_LAYERS`), then the vocabulary
    (down to ``min_vocab``, what the tokenizer needs), then the widths (halved,
    head size kept). Returns one line per change, with the estimates.
    """
    changes: list[str] = []
    start = _estimate(config, recipe)
    if start <= budget_bytes:
        return changes
    why = f"the full shape needs about {start / GiB:.1f} GiB here, over the rehearsal's {budget_bytes / GiB:.1f} GiB"
    layers = config.num_hidden_layers
    while config.num_hidden_layers > REHEARSAL_MIN_LAYERS and _estimate(config, recipe) > budget_bytes:
        config.num_hidden_layers = max(REHEARSAL_MIN_LAYERS, config.num_hidden_layers // 2)
    if getattr(config, "layer_types", None):  # Gemma 3, Qwen2: one entry per layer
        config.layer_types = config.layer_types[:config.num_hidden_layers]
    if hasattr(config, "max_window_layers"):
        config.max_window_layers = min(config.max_window_layers, config.num_hidden_layers)
    if config.num_hidden_layers != layers:
        changes.append(f"layers: {layers} -> {config.num_hidden_layers} ({why})")
    vocab = config.vocab_size
    if _estimate(config, recipe) > budget_bytes and vocab > min_vocab:
        config.vocab_size = -(-min_vocab // 64) * 64
        changes.append(f"vocabulary: {vocab:,} -> {config.vocab_size:,} rows (still over the budget with "
                       f"{config.num_hidden_layers} layers; the tokenizer used here needs {min_vocab:,})")
    widths = (config.hidden_size, config.intermediate_size)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    while _estimate(config, recipe) > budget_bytes and config.num_attention_heads > 1:
        config.head_dim = head_dim
        config.num_attention_heads = max(1, config.num_attention_heads // 2)
        config.num_key_value_heads = max(1, min(config.num_key_value_heads, config.num_attention_heads) // 2
                                         if config.num_key_value_heads > 1 else 1)
        while config.num_attention_heads % config.num_key_value_heads:
            config.num_key_value_heads -= 1
        config.hidden_size //= 2
        config.intermediate_size //= 2
    if (config.hidden_size, config.intermediate_size) != widths:
        changes.append(f"widths: hidden {widths[0]:,} -> {config.hidden_size:,}, MLP {widths[1]:,} -> "
                       f"{config.intermediate_size:,} (one layer alone is over the budget)")
    return changes


def _shrunk_recipe(recipe: Recipe, model_dir: Path, out: Path, steps: int, block_tokens: int,
                   changes: list[str]) -> Recipe:
    from cptnb.models.loading import cuda_available

    train, model = recipe.train, recipe.model
    block = recipe.data.block_tokens or model.max_seq_len_tokens
    if block > block_tokens:
        changes.append(f"blocks: {block:,} -> {block_tokens} tokens (a rehearsal checks the path, not the speed)")
        block = block_tokens
    micro, accum = 1, min(train.gradient_accumulation_steps, 2)
    if (micro, accum) != (train.per_device_batch_size, train.gradient_accumulation_steps):
        changes.append(f"batch: {train.per_device_batch_size} x {train.gradient_accumulation_steps} accumulation "
                       f"-> {micro} x {accum} (the same code path, a fraction of the tokens)")
    method, precision = model.method, train.precision
    if not cuda_available():
        if method == "qlora":
            method = "lora"
            changes.append("method: qlora -> lora (4-bit weights need a GPU to be worth it; adapters are the same)")
        if precision == "fp16":
            precision = "fp32"
            changes.append("precision: fp16 -> fp32 (fp16 mixed precision needs a GPU)")
        elif precision == "bf16" and not _fast_cpu_bf16():
            precision = "fp32"
            changes.append("precision: bf16 -> fp32 (this CPU has no bf16 matrix units: bf16 would be emulated, "
                           "many times slower)")
        if train.distributed_backend != "ddp" or train.zero_stage:
            changes.append(f"distributed: {train.distributed_backend} runs as one process here")
    changes.append(f"steps: {steps} (checkpoints at {steps // 2} and {steps}, then a resume from {steps // 2}), "
                   "output in a temporary folder")
    return recipe.replace(
        model={"name": str(model_dir), "method": method, "max_seq_len_tokens": block, "dtype": "auto"},
        data={"block_tokens": 0},
        train={"output_dir": str(out), "max_steps": steps, "save_steps": steps // 2, "save_total_limit": 2,
               "logging_steps": 1, "eval_steps": 0, "per_device_batch_size": micro,
               "gradient_accumulation_steps": accum, "precision": precision, "warmup_steps": 0, "warmup_ratio": 0.0},
    )


def _fast_cpu_bf16() -> bool:
    import torch

    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _losses(history: list[dict]) -> list[float]:
    return [e["train_loss"] for e in history if "train_loss" in e]


def rehearse(recipe: Recipe, steps: int = 4, memory_budget_bytes: float = REHEARSAL_MEMORY_BYTES,
             block_tokens: int = REHEARSAL_BLOCK_TOKENS, output_dir: str | Path | None = None) -> Rehearsal:
    """Run ``recipe`` for ``steps`` real optimizer steps on its model's shape with random weights, then resume.

    See the module docstring for what is shrunk and checked. ``output_dir``
    keeps the runs (default: a temporary folder, removed afterwards).
    """
    from cptnb.models.zoo import build_random_model
    from cptnb.planner.known_shapes import config_for
    from cptnb.train.run import run_recipe

    if steps < 2 or steps % 2:
        raise CptnbError(f"rehearse needs an even number of steps >= 2 (a checkpoint halfway), got {steps}")
    started = time.monotonic()
    cfg = recipe.model
    config, origin = config_for(cfg.name, cfg.trust_remote_code, cfg.cache_dir, cfg.seed)
    full_params = shape_from_config(config, cfg.name, cfg.trust_remote_code).total_params
    changes: list[str] = []
    tokenizer = _tokenizer_for(recipe, changes)
    temp = None if output_dir else tempfile.mkdtemp(prefix="cptnb-rehearsal-")
    root = Path(output_dir or temp)
    try:
        model_dir, out = root / "model", root / "run"
        shaped = _shrunk_recipe(recipe, model_dir, out, steps, block_tokens, changes)
        changes[:0] = shrink_config(config, shaped, memory_budget_bytes, len(tokenizer))
        shutil.rmtree(model_dir, ignore_errors=True)  # a reused output_dir: build this shape afresh
        build_random_model(config, tokenizer, model_dir, cfg.seed, {"shape": origin, "rehearsal_of": cfg.name},
                           trust_remote_code=cfg.trust_remote_code)
        params = shape_from_config(config, cfg.name, cfg.trust_remote_code).total_params
        log.info("rehearsal of %s on %s parameters (random weights): %s", cfg.name, f"{params:,}",
                 "; ".join(changes))
        first = run_recipe(shaped)
        # As after a crash between two checkpoints: the last one and the final model are gone.
        shutil.rmtree(out / f"checkpoint-{steps}", ignore_errors=True)
        shutil.rmtree(first.final_dir, ignore_errors=True)
        second = run_recipe(shaped, resume=True)
        result = Rehearsal(
            model=cfg.name, shape_origin=origin, params_rehearsed=params, params_recipe=full_params,
            changes=changes, steps=first.steps, resumed_from_step=second.resumed_from_step,
            losses=_losses(first.history), resumed_losses=_losses(second.history),
            seconds=time.monotonic() - started, output_dir=root,
        )
        if second.resumed_from_step != steps // 2:
            result.warnings.append(f"the resumed run started from step {second.resumed_from_step}, "
                                   f"not from the checkpoint at {steps // 2}")
        elif result.resume_gap > 1e-3:
            result.warnings.append(f"resumed losses differ from the uninterrupted run's by up to "
                                   f"{result.resume_gap:.3g}: resuming does not continue the same curve")
        return result
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
