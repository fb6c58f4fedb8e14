"""Turn the walls a learner hits (out of memory, no GPU, a lost Colab session) into messages that say what to do.

Raw failures here are unhelpful: a CUDA out-of-memory error prints allocator
statistics, ``bf16`` on a T4 says "Your setup doesn't support bf16/gpu", and a
resumed run on a fresh Colab runtime silently starts from step 0 because
``/content`` was wiped. These helpers name the setting to change and its new value.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cptnb.errors import CptnbError, OutOfMemoryError

log = logging.getLogger(__name__)

# CPU allocations that fail raise a plain RuntimeError; these are its messages.
_CPU_OOM_MARKERS = ("DefaultCPUAllocator: can't allocate memory", "DefaultCPUAllocator: not enough memory")

GPU_ON_COLAB = "on Colab: Runtime > Change runtime type > T4 GPU; on Kaggle: Settings > Accelerator > GPU"


def is_out_of_memory(err: BaseException) -> bool:
    """True for a CUDA out-of-memory error and for a failed CPU allocation."""
    import torch

    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err) for m in _CPU_OOM_MARKERS)


def in_colab() -> bool:
    return "COLAB_RELEASE_TAG" in os.environ or "COLAB_GPU" in os.environ


def in_kaggle() -> bool:
    return "KAGGLE_KERNEL_RUN_TYPE" in os.environ


def _release_memory() -> None:
    """Give back what the failed step held, so the notebook can go on after the user changes a setting."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _device_memory() -> str:
    import torch

    if not torch.cuda.is_available():
        return "CPU memory"
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return f"{props.name} with {props.total_memory / 2**30:.1f} GiB"


@contextmanager
def explain_out_of_memory(stage: str, advice: Callable[[], list[str]]) -> Iterator[None]:
    """Re-raise running out of memory inside the block as :class:`OutOfMemoryError` listing ``advice()``.

    ``advice`` is called only on failure, so it can look at what exists then
    (the last checkpoint, for instance). Other errors pass through unchanged.
    """
    try:
        yield
    except Exception as err:
        if not is_out_of_memory(err):
            raise
        first_line = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        # The traceback's frames hold the failed step's activations; a notebook keeps the last error alive,
        # so clear their locals before freeing memory.
        traceback.clear_frames(err.__traceback__)
        _release_memory()
        steps = "\n".join(f"  {i}. {line}" for i, line in enumerate(advice(), 1))
        raise OutOfMemoryError(
            f"out of memory during {stage} on {_device_memory()} ({first_line}).\n"
            f"Change one of these and run again:\n{steps}\n"
            "In a notebook, memory held by an earlier model stays taken until it is deleted: "
            "`del model; import gc; gc.collect()`, or restart the kernel/runtime and run from the top."
        ) from None


def training_oom_advice(cfg, method: str, block_tokens: int, last_checkpoint: Path | None) -> list[str]:
    """Concrete changes for a training step that did not fit, with the values to use."""
    import torch

    batch, accumulation = cfg.per_device_batch_size, cfg.gradient_accumulation_steps
    advice = []
    if not cfg.gradient_checkpointing:
        advice.append("train.gradient_checkpointing: true (activations recomputed in the backward pass, ~30% slower)")
    if batch > 1:
        micro = batch // 2 if batch % 2 == 0 else 1  # a divisor of batch keeps the tokens per step exactly
        advice.append(f"train.per_device_batch_size: {micro} and train.gradient_accumulation_steps: "
                      f"{accumulation * batch // micro} (same tokens per step, same result, a little slower)")
    if method == "lora" and torch.cuda.is_available():
        advice.append("model.method: qlora (the frozen weights in 4 bits: about a quarter of their memory)")
    if method == "full":
        advice.append("model.method: lora (gradients and optimizer state only for the adapters)")
    advice.append(f"model.max_seq_len_tokens: {max(64, block_tokens // 2)} (shorter blocks; changes what is learned "
                  "about long contexts)")
    advice.append("before the next long run, `plan(recipe, loaded, packed)` (or `cptnb plan`) estimates memory per "
                  "setting without training")
    if last_checkpoint is not None:
        advice.append(f"then continue from {last_checkpoint} with resume=True (`cptnb train --resume`): "
                      "changing the batch split keeps the checkpoint usable")
    return advice


def evaluation_oom_advice(cfg) -> list[str]:
    """Concrete changes for an evaluation (an ``EvalConfig``) whose batch did not fit."""
    advice = []
    if cfg.batch_size > 1:
        advice.append(f"eval.batch_size: {cfg.batch_size // 2} (items scored per forward pass; scores do not change)")
    window = max(128, cfg.window_tokens // 2)
    advice.append(f"eval.window_tokens: {window} and eval.stride_tokens: {window // 2} (held-out documents scored in "
                  "shorter windows; bits per byte rise slightly with less context)")
    advice.append("free the training model before evaluating: `del loaded; gc.collect()`, or restart and evaluate "
                  "the saved adapter")
    return advice


def warn_nothing_to_resume(output_dir: str | Path) -> None:
    """A resume that finds no checkpoint starts over; say so, and why that happens on Colab and Kaggle."""
    where = Path(output_dir)
    message = f"resume: no complete checkpoint in {where}"
    message += "" if where.exists() else f" ({where} does not exist)"
    message += ", so training starts from step 0."
    if in_colab() and not str(where.resolve()).startswith("/content/drive"):
        message += (" A Colab runtime reset deletes /content: keep train.output_dir on Google Drive "
                    "(`from google.colab import drive; drive.mount('/content/drive')`, then an output_dir under "
                    "/content/drive/MyDrive) so the next session can resume.")
    elif in_kaggle() and not str(where.resolve()).startswith("/kaggle/working"):
        message += " On Kaggle only /kaggle/working is kept between sessions: put train.output_dir there."
    elif not where.exists():
        message += " If an earlier session wrote checkpoints, check train.output_dir (or --train.output_dir)."
    log.warning(message)


def check_precision(precision: str) -> None:
    """Refuse precisions this machine cannot train in, naming the fix (a T4 has no bf16; fp16 needs a GPU)."""
    import torch

    if precision == "bf16" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(torch.cuda.current_device())
        raise CptnbError(
            f"train.precision: bf16 needs an Ampere or newer GPU (A100, L4, H100, ...); this {name} has none. "
            "Set precision: auto (picks fp16 with loss scaling here) or fp16."
        )
    if precision == "fp16" and not torch.cuda.is_available():
        raise CptnbError(
            "train.precision: fp16 mixed precision needs a CUDA GPU, and none is visible here. To use a GPU: "
            f"{GPU_ON_COLAB}, then run the notebook again from the top. To train on this CPU: precision: auto (fp32)."
        )
