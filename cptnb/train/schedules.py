"""Learning-rate schedules: linear warmup, then cosine / linear decay to a floor, or constant.

A multiplier of the peak rate, applied to every parameter group (so a lower
embedding learning rate keeps its ratio to the main one).
"""

from __future__ import annotations

import math


def warmup_steps_for(total_steps: int, warmup_steps: int, warmup_ratio: float) -> int:
    """Explicit warmup steps win; otherwise a share of the run, rounded up."""
    return warmup_steps if warmup_steps > 0 else math.ceil(total_steps * warmup_ratio)


def lr_multiplier(
    step: int, total_steps: int, warmup_steps: int, kind: str = "cosine", min_lr_ratio: float = 0.0
) -> float:
    """Share of the peak learning rate to use at optimizer step ``step`` (0-based).

    >>> lr_multiplier(0, 100, 10)   # first warmup step
    0.1
    >>> round(lr_multiplier(99, 100, 0, "linear", 0.1), 3)
    0.109
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    if kind == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif kind == "linear":
        shape = 1.0 - progress
    else:
        raise ValueError(f"unknown schedule {kind!r}; use cosine, linear or constant")
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape
