"""Multi-process training: the launcher for notebooks and the per-strategy Trainer arguments.

:func:`launch` runs ``cptnb train`` under ``torch.distributed.run`` (torchrun) in a
subprocess, one process per GPU (or per CPU share, with gloo). A notebook cannot
fork processes after CUDA is initialised, and a subprocess sidesteps that: the
cell streams the workers' output, and the result (final directory, losses) comes
back as a :class:`LaunchResult`. On a Kaggle 2xT4 notebook::

    result = launch("data_samples/recipes/smollm2_vi_lora_cpu.yaml", num_processes=2, output_dir="runs/2gpu")
    result.losses[-1]

:func:`strategy_arguments` turns ``train.distributed_backend`` into
``TrainingArguments`` fields (DDP, FSDP2 or DeepSpeed); :func:`cptnb.train.train`
applies them when it runs in one of several processes.
"""

from __future__ import annotations

import codecs
import importlib.util
import logging
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cptnb.config import Recipe, TrainConfig
from cptnb.errors import CptnbError
from cptnb.models.loading import cuda_available
from cptnb.train.monitor import read_metrics

log = logging.getLogger(__name__)

# Lines of the workers' log quoted in the error when a launch fails.
ERROR_TAIL_LINES = 40


class LaunchError(CptnbError):
    """A multi-process run failed; the message quotes the end of its log."""


@dataclass
class LaunchResult:
    """What a launched run wrote, read back from its output directory."""

    output_dir: Path
    final_dir: Path  # adapter/ (LoRA, QLoRA) or model/ (full), with tokenizer
    log_path: Path  # everything the workers printed
    num_processes: int
    history: list[dict[str, Any]] = field(default_factory=list)  # the events of metrics.jsonl

    @property
    def loss_steps(self) -> list[int]:
        """Optimizer steps at which a train loss was logged."""
        return [int(e["step"]) for e in self.history if "train_loss" in e]

    @property
    def losses(self) -> list[float]:
        """Train loss (nats/token, averaged over the global batch) at each of :attr:`loss_steps`."""
        return [float(e["train_loss"]) for e in self.history if "train_loss" in e]


def world_size_from_env() -> int:
    """Number of training processes, as torchrun / accelerate launch tell each of them (1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def _deepspeed_config(cfg: TrainConfig) -> dict[str, Any]:
    # "auto" values are filled in by transformers from the TrainingArguments, so the batch
    # size, clipping and precision stay defined in one place: the recipe.
    zero: dict[str, Any] = {"stage": cfg.zero_stage, "overlap_comm": True, "contiguous_gradients": True}
    if cfg.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True  # so the final save is a loadable model
    return {
        "zero_optimization": zero,
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
    }


def strategy_arguments(cfg: TrainConfig, method: str, world_size: int) -> dict[str, Any]:
    """Extra ``TrainingArguments`` fields for ``cfg.distributed_backend`` when ``world_size`` > 1.

    - ddp: data parallel (each process holds the whole model); every trainable
      parameter is used in each step, so DDP need not search for unused ones.
    - fsdp: FSDP2, one shard unit per decoder layer, full state dict on save (so
      checkpoints and ``model/`` load with plain transformers); for ``method: full``.
    - deepspeed: ZeRO ``cfg.zero_stage``, needs the ``deepspeed`` package.

    A single process gets no extra arguments, whatever the backend.
    """
    if world_size <= 1:
        if cfg.distributed_backend != "ddp":
            log.info("one process: distributed_backend=%s has no effect", cfg.distributed_backend)
        return {}
    if cfg.distributed_backend == "ddp":
        if cfg.zero_stage:
            # Imported FPT AI Studio recipes pair ddp with a ZeRO stage; only DeepSpeed knows ZeRO.
            log.warning("zero_stage=%d is ignored with distributed_backend=ddp; use deepspeed for ZeRO", cfg.zero_stage)
        return {"ddp_find_unused_parameters": False}
    if cfg.distributed_backend == "fsdp":
        if method != "full":
            raise CptnbError(
                f"train.distributed_backend: fsdp shards full weights, but model.method is {method}; "
                "use distributed_backend: ddp for lora/qlora (adapters are small), or method: full"
            )
        if not cuda_available():
            log.warning("FSDP needs GPUs: accelerate trains CPU processes with plain DDP instead (same results)")
        return {
            "fsdp": True,
            "fsdp_config": {
                "version": 2,
                "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",  # wraps the model's _no_split_modules (decoder layers)
                "reshard_after_forward": True,
                "state_dict_type": "FULL_STATE_DICT",
                "activation_checkpointing": bool(cfg.gradient_checkpointing),
            },
        }
    if importlib.util.find_spec("deepspeed") is None:
        raise CptnbError(
            "train.distributed_backend: deepspeed needs DeepSpeed: pip install deepspeed (on a CUDA machine), "
            "or use distributed_backend: ddp or fsdp"
        )
    return {"deepspeed": _deepspeed_config(cfg)}


def _load_recipe(recipe_or_path: Recipe | str | Path) -> Recipe:
    if isinstance(recipe_or_path, Recipe):
        return recipe_or_path  # recipes are frozen: changes below make copies, the caller's stays as it was
    return Recipe.from_yaml(recipe_or_path)


def _check_process_count(num_processes: int) -> None:
    import torch

    if not isinstance(num_processes, int) or num_processes < 1:
        raise CptnbError(f"num_processes must be an integer >= 1, got {num_processes!r}")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and num_processes > gpus:
        raise CptnbError(f"num_processes={num_processes} but only {gpus} GPU(s) are visible; use at most {gpus}")


def _worker_env(num_processes: int, threads_per_process: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"  # stream the workers' output as it happens
    if threads_per_process:
        env["OMP_NUM_THREADS"] = str(threads_per_process)
    elif "OMP_NUM_THREADS" not in env and not cuda_available():
        # CPU processes share the cores; oversubscribed threads make every step slower.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // num_processes))
    return env


def _stream(proc: subprocess.Popen, log_file, echo: bool) -> None:
    """Copy the workers' output to the log file and (when ``echo``) to this process's stdout, as it comes."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    fd = proc.stdout.fileno()
    while True:
        chunk = os.read(fd, 8192)  # raw chunks, not lines: tqdm redraws with \r and no newline
        if not chunk:
            break
        text = decoder.decode(chunk)
        log_file.write(text)
        log_file.flush()
        if echo:
            sys.stdout.write(text)
            sys.stdout.flush()


def _stop(proc: subprocess.Popen) -> None:
    """Stop torchrun and its workers.

    torchrun starts each worker in a session of its own, so signalling torchrun's
    process group would leave them running: list them first, then stop them too.
    """
    import psutil

    if proc.poll() is not None:
        return
    try:
        workers = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        workers = []
    proc.send_signal(signal.SIGTERM)  # torchrun forwards it to the workers and waits for them
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    _, alive = psutil.wait_procs(workers, timeout=10)
    for worker in alive:
        worker.kill()


# A worker's own words: the CLI's message for a user error, or the last line of a traceback.
# torchrun may prefix worker lines with "[rankN]:".
_USER_ERROR = re.compile(r"^(\[rank\d+\]:\s?)?cptnb: error:")
_EXCEPTION = re.compile(r"^(\[rank\d+\]:\s?)?[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*")


def _failure(log_path: Path, returncode: int, num_processes: int) -> LaunchError:
    lines = log_path.read_text(encoding="utf-8", errors="replace").replace("\r", "\n").splitlines()
    lines = [line for line in lines if line.strip()]
    # The first worker to fail prints first; the others then fail on the broken connection.
    causes = [line for line in lines if _USER_ERROR.match(line)] or [line for line in lines if _EXCEPTION.match(line)]
    head = f"{causes[0]}\n" if causes else ""
    tail = "\n".join(lines[-ERROR_TAIL_LINES:])
    return LaunchError(
        f"{head}training with {num_processes} process(es) failed (exit code {returncode}). "
        f"Full log: {log_path}\n--- last {ERROR_TAIL_LINES} lines ---\n{tail}"
    )


def launch(
    recipe_or_path: Recipe | str | Path,
    num_processes: int = 2,
    output_dir: str | Path | None = None,
    resume: bool = False,
    threads_per_process: int | None = None,
    echo: bool = True,
) -> LaunchResult:
    """Train ``recipe_or_path`` with ``num_processes`` processes under torchrun; return what it wrote.

    Writes the recipe to ``<output_dir>/recipe.yaml`` (``output_dir`` defaults to
    ``train.output_dir``), starts ``python -m torch.distributed.run --standalone
    --nproc-per-node N -m cptnb.cli train --config that.yaml [--resume]`` and
    streams its output into ``<output_dir>/launch.log`` and, with ``echo``, the
    notebook cell. On CPU each process gets ``threads_per_process`` torch threads
    (default: the cores divided among the processes) and gloo; on GPUs NCCL.
    Raises :class:`LaunchError` with the end of the log when a worker fails.
    """
    recipe = _load_recipe(recipe_or_path)
    _check_process_count(num_processes)
    out = Path(output_dir or recipe.train.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    recipe = recipe.replace(train={"output_dir": str(out)})  # workers may start elsewhere; absolute is unambiguous
    recipe_path = out / "recipe.yaml"
    recipe.to_yaml(recipe_path)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={num_processes}",
        "-m", "cptnb.cli", "train", "--config", str(recipe_path),
    ] + (["--resume"] if resume else [])
    log_path = out / "launch.log"
    log.info("launching %d process(es): %s", num_processes, " ".join(cmd))
    with open(log_path, "a" if resume else "w", encoding="utf-8") as log_file:
        # Own session: a Ctrl-C reaches only this process, which then stops torchrun and the workers in order.
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_worker_env(num_processes, threads_per_process),
            start_new_session=True,
        )
        try:
            _stream(proc, log_file, echo)
            returncode = proc.wait()
        except BaseException:  # KeyboardInterrupt from the notebook's stop button included
            _stop(proc)
            raise
    if returncode != 0:
        raise _failure(log_path, returncode, num_processes)
    final_dir = out / ("model" if recipe.model.method == "full" else "adapter")
    if not final_dir.is_dir():
        raise LaunchError(f"the run finished but wrote no {final_dir}; see {log_path}")
    metrics = out / "metrics.jsonl"
    history = read_metrics(metrics) if metrics.is_file() else []
    return LaunchResult(out, final_dir, log_path, num_processes, history)
