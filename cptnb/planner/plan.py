"""The plan itself: tokens, steps, time and memory per method, warnings with advice, and its rendering."""


from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from cptnb.config import METHODS, Recipe
from cptnb.models.loading import LoadedModel, cuda_available
from cptnb.planner.memory import (
    OOM_SHARE,
    GiB,
    Hardware,
    MemoryEstimate,
    estimate_memory,
    optimizer_states,
    resolve_hardware,
    strategy_for,
)
from cptnb.planner.shape import ModelShape, model_shape
from cptnb.planner.timing import block_dataset, measure_step_seconds
from cptnb.tables import markdown_table

log = logging.getLogger(__name__)

# --- the plan --------------------------------------------------------------------------------------------------


def available_memory(device: str) -> tuple[float | None, str]:
    """Memory a run on this machine can use per device, and where the number came from.

    CUDA: ``mem_get_info`` free memory plus what this process already holds,
    smallest over the visible devices. CPU: system RAM available (psutil) plus
    this process's resident memory (a model already loaded here is counted in
    the estimate, so it must be counted here too).
    """
    import psutil
    import torch

    if device == "cuda":
        if not cuda_available():
            return None, "unknown: planning for CUDA on a machine without a GPU (pass available_memory_bytes)"
        count = torch.cuda.device_count()
        per_device = [torch.cuda.mem_get_info(i)[0] + torch.cuda.memory_reserved(i) for i in range(count)]
        return float(min(per_device)), f"CUDA free + held by this process, smallest of {len(per_device)} device(s)"
    ram = psutil.virtual_memory().available + psutil.Process().memory_info().rss
    return float(ram), "system RAM available + this process (psutil)"


def steps_for(recipe: Recipe, num_blocks: int | None, num_devices: int) -> int | None:
    """Optimizer steps: ``max_steps``, or epochs over ``num_blocks`` counted as transformers' Trainer does.

    Each device's dataloader yields ceil(blocks / (micro x devices)) micro-batches;
    an epoch is ceil(that / accumulation) updates; the run is
    ceil(epochs x updates per epoch).
    """
    train = recipe.train
    if train.max_steps > 0:
        return train.max_steps
    if num_blocks is None:
        return None
    batches = math.ceil(num_blocks / (train.per_device_batch_size * num_devices))
    per_epoch = max(math.ceil(batches / train.gradient_accumulation_steps), 1)
    return math.ceil(train.num_train_epochs * per_epoch)


@dataclass
class Plan:
    """Everything to know before pressing train: how much, how long, and whether it fits."""

    model: str  # model.name of the recipe
    method: str  # the recipe's method (marked in the memory table)
    device: str  # cuda | cpu: what the plan is for
    num_devices: int  # data-parallel devices
    strategy: str  # single | ddp | fsdp | zero0..3
    precision: str  # compute precision
    total_params: int  # base model parameters
    trainable_params: int  # parameters the chosen method updates
    block_tokens: int  # tokens per packed block
    tokens_per_step: int  # block x micro-batch x accumulation x devices
    steps: int | None  # optimizer steps (None: epochs without a dataset size)
    dataset_blocks: int | None  # packed training blocks, when known
    total_tokens: int | None  # tokens the run trains on
    epochs: float | None  # passes over the dataset
    seconds_per_step: float | None  # measured, else None
    estimated_seconds: float | None  # seconds_per_step x steps
    time_note: str  # how the time was obtained, or why it was not
    memory: dict[str, MemoryEstimate]  # method -> per-device estimate, for comparison
    strategies: dict[str, MemoryEstimate]  # multi-device: strategy -> estimate for the chosen method
    available_memory_bytes: float | None  # per device
    available_memory_source: str  # where that number came from
    warnings: list[str] = field(default_factory=list)  # likely out-of-memory and other problems, with the fix
    notes: list[str] = field(default_factory=list)  # assumptions worth knowing

    @property
    def chosen(self) -> MemoryEstimate:
        return self.memory[self.method]

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("memory", "strategies")}
        out["memory"] = {k: v.to_dict() for k, v in self.memory.items()}
        out["strategies"] = {k: v.to_dict() for k, v in self.strategies.items()}
        return out

    def markdown(self) -> str:
        return _render(self)

    def __str__(self) -> str:
        return self.markdown()

    def _repr_markdown_(self) -> str:  # Jupyter renders the plan as a table
        return self.markdown()


def plan(recipe: Recipe, loaded: LoadedModel | None = None, dataset=None, available_memory_bytes: float | None = None,
         measure: bool = True, *, num_devices: int | None = None, device: str = "auto") -> Plan:
    """Plan ``recipe``: tokens, steps, time (from a short warm-up when measured) and memory per method.

    ``loaded`` gives parameter counts and enables the warm-up; without it the
    model is built on the meta device from its config. ``dataset`` is the
    packed training set (:class:`~cptnb.data.pack.PackedCorpus` or a
    ``datasets.Dataset``) or just its number of blocks. ``device`` and
    ``num_devices`` describe where the run will go ("auto": this machine);
    ``available_memory_bytes`` (per device) overrides what this machine reports.
    """
    hw = resolve_hardware(recipe, device, num_devices)
    shape = model_shape(loaded if loaded is not None else recipe.model)
    blocks = block_dataset(dataset) if not isinstance(dataset, int) else None
    num_blocks = dataset if isinstance(dataset, int) else (len(blocks) if blocks is not None else None)
    block = len(blocks[0]["input_ids"]) if blocks is not None and len(blocks) else (
        recipe.data.block_tokens or recipe.model.max_seq_len_tokens)
    if block != (recipe.data.block_tokens or recipe.model.max_seq_len_tokens):
        recipe = _with(recipe, "data", block_tokens=block)  # plan what the dataset really holds
    strategy = strategy_for(recipe, hw.num_devices)
    memory = {m: estimate_memory(shape, recipe, method=m, hardware=hw, shape=shape) for m in METHODS}
    strategies = {}
    if hw.num_devices > 1:
        for name in ("ddp", "zero1", "zero2", "zero3", "fsdp"):
            strategies[name] = estimate_memory(shape, recipe, hardware=hw, strategy=name, shape=shape)
    train = recipe.train
    tokens_per_step = block * train.per_device_batch_size * train.gradient_accumulation_steps * hw.num_devices
    steps = steps_for(recipe, num_blocks, hw.num_devices)
    if train.max_steps > 0:
        total_tokens = steps * tokens_per_step
        epochs = total_tokens / (num_blocks * block) if num_blocks else None
    else:
        epochs = train.num_train_epochs
        total_tokens = round(num_blocks * block * epochs) if num_blocks is not None else None

    if available_memory_bytes is not None:
        available, source = float(available_memory_bytes), "given"
    else:
        available, source = available_memory(hw.device)
    timing, time_note = None, ""
    here = "cuda" if cuda_available() else "cpu"
    if not measure:
        time_note = "measure=False"
    elif loaded is None or blocks is None or not len(blocks):
        time_note = "pass loaded= and the packed dataset= to time a short warm-up"
    elif hw.device != here:
        time_note = f"this machine is {here}, the plan is for {hw.device}"
    else:
        timing = measure_step_seconds(loaded, blocks, recipe)
        time_note = f"measured on {timing.device}: {timing.tokens_per_second:,.0f} tokens/s per device"
        time_note += f"; {timing.note}" if timing.note else ""
        if hw.num_devices > 1:
            time_note += "; gradient communication between devices is not included"
    seconds = timing.seconds_per_step if timing else None
    result = Plan(
        model=recipe.model.name, method=recipe.model.method, device=hw.device, num_devices=hw.num_devices,
        strategy=strategy, precision=hw.precision, total_params=shape.total_params,
        trainable_params=memory[recipe.model.method].trainable_params, block_tokens=block,
        tokens_per_step=tokens_per_step, steps=steps, dataset_blocks=num_blocks, total_tokens=total_tokens,
        epochs=epochs, seconds_per_step=seconds,
        estimated_seconds=seconds * steps if seconds is not None and steps is not None else None,
        time_note=time_note, memory=memory, strategies=strategies, available_memory_bytes=available,
        available_memory_source=source,
    )
    result.warnings, result.notes = _warnings(result, recipe, shape, hw)
    if loaded is not None and loaded.method != recipe.model.method:
        result.warnings.append(f"the loaded model is set up for {loaded.method} but the recipe says "
                               f"{recipe.model.method}; the time was measured for {loaded.method}")
    return result


def _with(recipe: Recipe, section: str, **changes) -> Recipe:
    """A copy of ``recipe`` with fields of one section changed (validated again)."""
    return recipe.replace(**{section: changes})


def _needed(estimate: MemoryEstimate, hw: Hardware) -> float:
    # CPU "devices" (processes) share one RAM; GPUs each have their own.
    return estimate.total_bytes * (hw.num_devices if hw.device == "cpu" else 1)


def _warnings(p: Plan, recipe: Recipe, shape: ModelShape, hw: Hardware) -> tuple[list[str], list[str]]:
    warnings: list[str] = []
    notes = list(dict.fromkeys(p.chosen.notes))
    train, cfg = recipe.train, recipe.model
    if p.available_memory_bytes is None:
        notes.append(f"available memory {p.available_memory_source}; no out-of-memory check was made")
    else:
        need = _needed(p.chosen, hw)
        if need > OOM_SHARE * p.available_memory_bytes:
            fits, short = _advice(recipe, shape, hw, p.available_memory_bytes)
            available = p.available_memory_bytes
            options = f"Each of these fits alone: {'; '.join(fits)}." if fits else \
                "No single change fits: combine several, or use a larger device or more devices."
            if short:
                options += f" Not enough alone: {'; '.join(short)}."
            warnings.append(
                f"likely out of memory: {cfg.method} needs about {_fmt(need)} per device but {_fmt(available)} is "
                f"available ({100 * need / available:.0f}%). {options}"
            )
    if hw.num_devices > 1 and train.zero_stage and train.distributed_backend != "deepspeed":
        warnings.append(f"train.zero_stage={train.zero_stage} has no effect with distributed_backend="
                        f"{train.distributed_backend}; set distributed_backend: deepspeed to shard optimizer state")
    if shape.max_position_embeddings and p.block_tokens > shape.max_position_embeddings:
        warnings.append(f"blocks of {p.block_tokens} tokens exceed the model's max_position_embeddings "
                        f"({shape.max_position_embeddings}); lower model.max_seq_len_tokens")
    if cfg.method == "qlora" and hw.device != "cuda":
        warnings.append("qlora on a CPU runs (bitsandbytes) but dequantizes every weight at every step: slower than "
                        "lora, to save memory a CPU rarely lacks; use method: lora here, qlora on a GPU")
    if p.dataset_blocks is not None and p.dataset_blocks * p.block_tokens < p.tokens_per_step:
        warnings.append(f"one optimizer step wants {p.tokens_per_step:,} tokens but the dataset holds "
                        f"{p.dataset_blocks * p.block_tokens:,}; lower per_device_batch_size or "
                        "gradient_accumulation_steps")
    if p.steps is None:
        notes.append("steps unknown: train.max_steps is -1 (epochs) and no dataset size was given")
    if hw.device == "cuda" and cfg.backend != "transformers":
        notes.append("estimates follow transformers + PEFT; Unsloth (backend auto, where installed) "
                     "uses less for activations")
    if not hw.fused_loss and p.chosen.logits_bytes > p.chosen.activations_bytes:
        notes.append("the full logits dominate: TRL's chunked loss (CUDA with Triton) avoids them")
    if p.chosen.recompute_bytes:
        notes.append("gradient checkpointing: the recomputed layer and the logits are never alive together, "
                     "so only the larger of the two counts")
    return warnings, notes


def _advice(recipe: Recipe, shape: ModelShape, hw: Hardware, available: float) -> tuple[list[str], list[str]]:
    """Concrete changes, each with the memory it would need: ``(those that fit, those that do not)``, smallest first."""
    train, cfg = recipe.train, recipe.model
    options: list[tuple[str, Recipe, str | None]] = []
    if not train.gradient_checkpointing:
        checkpointed = _with(recipe, "train", gradient_checkpointing=True)
        options.append(("train.gradient_checkpointing: true", checkpointed, None))
    if train.per_device_batch_size > 1:
        micro = train.per_device_batch_size // 2
        accum = train.gradient_accumulation_steps * train.per_device_batch_size // micro
        smaller = _with(recipe, "train", per_device_batch_size=micro, gradient_accumulation_steps=accum)
        text = f"per_device_batch_size: {micro} with gradient_accumulation_steps: {accum} (same tokens per step)"
        options.append((text, smaller, None))
    if cfg.method != "qlora" and hw.device == "cuda":
        options.append(("model.method: qlora", recipe, "qlora"))
    if cfg.method == "full":
        options.append(("model.method: lora", recipe, "lora"))
    states, state_bytes, _ = optimizer_states(train.optimizer)
    if states and (state_bytes is None or state_bytes > 1) and hw.device == "cuda":
        options.append(("train.optimizer: adamw_8bit", _with(recipe, "train", optimizer="adamw_8bit"), None))
    seq = recipe.data.block_tokens or cfg.max_seq_len_tokens
    if seq >= 256:
        options.append((f"model.max_seq_len_tokens: {seq // 2} (shorter blocks)",
                        _with(_with(recipe, "model", max_seq_len_tokens=seq // 2), "data", block_tokens=0), None))
    if hw.num_devices > 1 and strategy_for(recipe, hw.num_devices) not in ("zero3", "fsdp"):
        options.append(("train.distributed_backend: fsdp (shards weights, gradients and optimizer state)",
                        _with(recipe, "train", distributed_backend="fsdp"), None))
    rated = []
    for text, changed, method in options:
        need = _needed(estimate_memory(shape, changed, method=method, hardware=hw, shape=shape), hw)
        rated.append((need, f"{text} -> {_fmt(need)}"))
    rated.sort()
    return ([t for need, t in rated if need <= OOM_SHARE * available],
            [t for need, t in rated if need > OOM_SHARE * available])


# --- rendering -------------------------------------------------------------------------------------------------


def _fmt(nbytes: float) -> str:
    if not nbytes:
        return "-"
    for unit, size in (("GiB", GiB), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:.2f} {unit}" if unit == "GiB" else f"{nbytes / size:.1f} {unit}"
    return f"{nbytes:.0f} B"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


_MEMORY_HEADER = ["", "trainable", "weights", "fp32 master", "gradients", "optimizer", "activations", "logits",
                  "overhead + margin", "total"]


def _memory_rows(estimates: dict[str, MemoryEstimate], marked: str) -> list[str]:
    rows = []
    for key, e in estimates.items():
        label = f"**{key}** (chosen)" if key == marked else key
        cells = [label, f"{e.trainable_params:,}", *(_fmt(x) for x in (
            e.weights_bytes, e.master_weights_bytes, e.gradients_bytes, e.optimizer_bytes,
            e.activations_bytes + e.recompute_bytes, e.logits_bytes, e.overhead_bytes + e.margin_bytes)),
            f"**{_fmt(e.total_bytes)}**"]
        rows.append(cells)
    return [markdown_table(_MEMORY_HEADER, rows, right=range(1, 10))]


def _render(p: Plan) -> str:
    where = f"{p.num_devices} x {p.device}" + (f", {p.strategy}" if p.num_devices > 1 else "")
    share = 100 * p.trainable_params / max(p.total_params, 1)
    steps = f"{p.steps:,}" if p.steps is not None else "unknown"
    if p.epochs is not None and p.dataset_blocks is not None:
        steps += f" ({p.epochs:.2f} epochs over {p.dataset_blocks:,} blocks)"
    time_text = (f"{p.seconds_per_step:.2f} s/step -> {_duration(p.estimated_seconds)} total"
                 if p.estimated_seconds is not None else
                 f"{p.seconds_per_step:.2f} s/step" if p.seconds_per_step is not None else "not measured")
    available = _fmt(p.available_memory_bytes) if p.available_memory_bytes is not None else "unknown"
    lines = [
        f"## Training plan: {p.model}, {p.method}, {where}, {p.precision}",
        "",
        markdown_table(["", ""], [
            ["parameters", f"{p.total_params:,} ({p.trainable_params:,} trainable, {share:.2f}%)"],
            ["tokens per optimizer step", f"{p.tokens_per_step:,} (blocks of {p.block_tokens:,} tokens)"],
            ["optimizer steps", steps],
            ["tokens trained", f"{p.total_tokens:,}" if p.total_tokens is not None else "unknown"],
            ["time", f"{time_text} ({p.time_note})"],
            ["available memory per device", f"{available} ({p.available_memory_source})"],
        ]),
        "",
        f"### Memory per device, by method ({where})",
        "",
        *_memory_rows(p.memory, p.method),
    ]
    if p.strategies:
        lines += ["", f"### Memory per device for {p.method}, by multi-GPU strategy", "",
                  *_memory_rows(p.strategies, p.strategy)]
    for title, items in (("Warnings", p.warnings), ("Notes", p.notes)):
        if items:
            lines += ["", f"### {title}", "", *(f"- {item}" for item in items)]
    return "\n".join(lines) + "\n"
