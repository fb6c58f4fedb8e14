"""The datatrove executor for ``ScaleConfig.executor``, and waiting for its tasks (this module imports datatrove)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from cptnb.data.parallel import start_method, usable_cores
from cptnb.data.scale.config import ScaleConfig
from cptnb.errors import CptnbError

log = logging.getLogger(__name__)


def _env_command(scale: ScaleConfig) -> str | None:
    if scale.slurm_env_command:
        return scale.slurm_env_command
    if sys.prefix != sys.base_prefix:  # a virtual environment: activate the same one in the job
        return f"source {Path(sys.prefix) / 'bin' / 'activate'}"
    return None


def build_executor(pipeline: list, scale: ScaleConfig, tasks: int, logging_dir: Path):
    """A datatrove executor running ``pipeline`` as ``tasks`` tasks, logging to ``logging_dir``."""
    logging_dir = str(logging_dir)
    if scale.executor == "local":
        from datatrove.executor import LocalPipelineExecutor

        workers = min(scale.workers or usable_cores(), tasks)
        return LocalPipelineExecutor(
            pipeline, tasks=tasks, workers=workers, logging_dir=logging_dir, start_method=start_method(),
            local_tasks=scale.local_tasks, local_rank_offset=scale.local_rank_offset,
        )
    if scale.executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        return SlurmPipelineExecutor(
            pipeline, tasks=tasks, time=scale.slurm_time, partition=scale.slurm_partition,
            cpus_per_task=scale.slurm_cpus_per_task, mem_per_cpu_gb=scale.slurm_mem_per_cpu_gb,
            workers=scale.workers or -1, job_name=scale.slurm_job_name, qos="", env_command=_env_command(scale),
            logging_dir=logging_dir, mail_type="NONE", requeue_signals=None,
        )
    if scale.executor == "ray":
        from datatrove.executor.ray import RayPipelineExecutor

        return RayPipelineExecutor(
            pipeline, tasks=tasks, workers=scale.workers or -1, logging_dir=logging_dir,
            cpus_per_task=scale.ray_cpus_per_task, mem_per_cpu_gb=scale.ray_mem_per_cpu_gb,
        )
    raise ValueError(f"not a datatrove executor: {scale.executor!r}")


def _ray_ready(scale: ScaleConfig) -> None:
    import ray

    if not ray.is_initialized():
        address = scale.ray_address or os.environ.get("RAY_ADDRESS") or None
        log.info("connecting to Ray at %s", address or "a new local cluster")
        ray.init(address=address, log_to_driver=False)


def run_executor(executor, scale: ScaleConfig) -> None:
    """Run (or submit) the tasks and return when every task of the run has completed, or raise saying why not."""
    if scale.executor == "ray":
        _ray_ready(scale)
    executor.run()
    if scale.executor == "slurm":
        _wait_for_slurm(executor, scale)
    missing = executor.get_incomplete_ranks(skip_completed=True)
    if not missing:
        return
    logs = Path(str(executor.logging_dir.path)) / "logs"
    if scale.executor == "local" and (scale.local_tasks != -1 or scale.local_rank_offset):
        raise CptnbError(
            f"this machine ran its tasks; {len(missing)} of {executor.world_size} are not done yet (first: {missing[0]}). "
            "Run the other machines' shares (data.scale.local_tasks / local_rank_offset) into the same work_dir, "
            "then run prepare once more (its completed tasks are skipped) to merge."
        )
    raise CptnbError(
        f"{len(missing)} of {executor.world_size} corpus tasks did not complete (first: rank {missing[0]}); their "
        f"logs are in {logs}. Fix the cause and run again: completed tasks are skipped."
    )


def _wait_for_slurm(executor, scale: ScaleConfig) -> None:
    """Poll the completion markers until every task is done, the job left the queue, or the timeout passes."""
    deadline = time.monotonic() + scale.timeout_hours * 3600
    gone_once = False
    while executor.get_incomplete_ranks(skip_completed=True):
        if time.monotonic() > deadline:
            raise CptnbError(f"slurm job {executor.job_id}: tasks still incomplete after {scale.timeout_hours} h "
                             "(data.scale.timeout_hours); completed tasks are skipped when you run again")
        queued = _in_queue(executor.job_id)
        if queued is False:
            if gone_once:  # left the queue two polls in a row with tasks missing: it failed
                return
            gone_once = True
        time.sleep(scale.poll_seconds)


def _in_queue(job_id) -> bool | None:
    """Whether slurm still lists the job (None when squeue cannot tell)."""
    if job_id in (None, -1):
        return False
    try:
        out = subprocess.run(["squeue", "-h", "-j", str(job_id)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None
