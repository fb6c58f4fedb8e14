"""A short measured warm-up: seconds per optimizer step on real packed blocks, leaving the model unchanged."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from cptnb.config import Recipe
from cptnb.errors import ConfigError, CptnbError
from cptnb.models.loading import LoadedModel
from cptnb.planner.memory import GiB

log = logging.getLogger(__name__)



@dataclass
class StepTiming:
    """A short real warm-up: seconds per optimizer step on this machine (``float(timing)`` gives it)."""

    seconds_per_step: float  # micro_batch_seconds x gradient_accumulation_steps + optimizer_seconds
    micro_batch_seconds: float  # median forward + backward of one micro-batch
    optimizer_seconds: float  # one optimizer update, timed on a throwaway copy (0 when skipped)
    tokens_per_second: float  # per device
    device: str  # where it was measured, e.g. "cpu" or "cuda:0"
    note: str = ""  # what was left out, if anything

    def __float__(self) -> float:
        return self.seconds_per_step


OPTIMIZER_TIMING_LIMIT_BYTES = 256 * 2**20  # above this, copying the trainable weights to time an update costs too much


def block_dataset(dataset):
    """The datasets.Dataset (or list) of ``input_ids`` blocks inside ``dataset``."""
    from cptnb.data.pack import PackedCorpus

    return dataset.dataset if isinstance(dataset, PackedCorpus) else dataset


def measure_step_seconds(loaded: LoadedModel, dataset, recipe: Recipe, steps: int = 2, warmup_steps: int = 1
                         ) -> StepTiming:
    """Time ``steps`` real forward + backward passes on packed blocks (after ``warmup_steps`` untimed ones).

    Uses the recipe's micro-batch, precision and gradient checkpointing. The
    model's weights are never updated: gradients are discarded afterwards, and
    the optimizer update is timed on a throwaway copy of the trainable weights
    (skipped above :data:`OPTIMIZER_TIMING_LIMIT_BYTES`). The RNG state and the
    train/eval mode are restored, so a following :func:`cptnb.train.train`
    starts exactly as it would have.
    """
    import torch

    from cptnb.train.trainer import resolve_precision

    blocks = block_dataset(dataset)
    if blocks is None or len(blocks) == 0:
        raise CptnbError("measure_step_seconds needs packed training blocks; the dataset is empty")
    if steps < 1 or warmup_steps < 0:
        raise ConfigError([f"steps must be >= 1 and warmup_steps >= 0; got {steps} and {warmup_steps}"], "planner")
    model, train = loaded.model, recipe.train
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device if params else torch.device("cpu")
    micro, accum = train.per_device_batch_size, train.gradient_accumulation_steps
    precision = resolve_precision(train.precision)
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    enable_gc = train.gradient_checkpointing and not getattr(model, "is_gradient_checkpointing", False)
    was_training, old_grads = model.training, [p.grad for p in params]
    times: list[float] = []
    optimizer_seconds, note = 0.0, ""
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=rng_devices):
            model.train()
            if enable_gc:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            for k in range(warmup_steps + steps):
                rows = [blocks[(k * micro + j) % len(blocks)]["input_ids"] for j in range(micro)]
                ids = torch.tensor(rows, dtype=torch.long, device=device)
                _sync(device)
                start = time.perf_counter()
                with torch.autocast(device.type, dtype=half, enabled=half is not None):
                    loss = model(input_ids=ids, labels=ids).loss
                (loss / accum).backward()
                _sync(device)
                if k >= warmup_steps:
                    times.append(time.perf_counter() - start)
            optimizer_seconds, note = _time_optimizer(params, device)
    finally:
        for p, g in zip(params, old_grads):
            p.grad = g
        if enable_gc:
            model.gradient_checkpointing_disable()
        model.train(was_training)
    micro_seconds = sorted(times)[len(times) // 2]
    seconds = micro_seconds * accum + optimizer_seconds
    block = len(blocks[0]["input_ids"])
    timing = StepTiming(seconds, micro_seconds, optimizer_seconds, micro * accum * block / seconds, str(device), note)
    log.info("measured %.3f s per optimizer step on %s (%.0f tokens/s)", seconds, device, timing.tokens_per_second)
    return timing


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_optimizer(params, device) -> tuple[float, str]:
    """Seconds for one AdamW update of copies of ``params`` (their current gradients), or 0 with a reason."""
    import torch

    size = sum(p.numel() * p.element_size() for p in params)
    if size > OPTIMIZER_TIMING_LIMIT_BYTES:
        return 0.0, f"optimizer update not timed ({size / GiB:.1f} GiB of trainable weights would need copying)"
    copies = []
    for p in params:
        c = p.detach().clone()
        c.grad = p.grad.detach().clone() if p.grad is not None else torch.zeros_like(c)
        copies.append(c)
    optimizer = torch.optim.AdamW(copies, lr=1e-4)
    _sync(device)
    start = time.perf_counter()
    optimizer.step()  # the first step also allocates the state, as the real first step does
    _sync(device)
    return time.perf_counter() - start, ""
