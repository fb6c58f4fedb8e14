"""Where the corpus stage runs: in this process (default) or on a datatrove executor (local, Slurm, Ray).

This module imports nothing from datatrove, so a recipe with the default executor
never needs it installed.
"""

from __future__ import annotations

from dataclasses import dataclass

from cptnb.configbase import RECIPE_PATHS, Section, choice, option

EXECUTORS = ("inprocess", "local", "slurm", "ray")


@dataclass
class ScaleConfig(Section):
    """How the corpus stage scales out: which executor, how many tasks, and each executor's own settings."""

    executor: str = option(
        "inprocess", "inprocess (one process + a local worker pool, the notebook path), or a datatrove executor: "
        "local (processes on this machine), slurm (a job array) or ray (an existing Ray cluster)."
    )
    tasks: int = option(0, "datatrove tasks (shards of the work); 0 = one per input file or byte range.")
    workers: int = option(0, "Tasks running at once; 0 = one per usable core (local) or no limit (slurm, ray).")
    split_bytes: int = option(
        256 * 1024 * 1024, "A plain .jsonl file larger than this many bytes is cut (at line starts) into byte ranges "
        "of about this size, so that several tasks share it."
    )
    work_dir: str = option("", "Shared folder for shards, datatrove logs and stats; empty = <out_dir>/scale.")
    local_tasks: int = option(-1, "local executor: tasks run by this machine (-1 = all); with local_rank_offset "
                              "several machines split one run.")
    local_rank_offset: int = option(0, "local executor: rank of the first task this machine runs.")
    slurm_partition: str = option("", "slurm: partition to submit to (required for slurm).")
    slurm_time: str = option("4:00:00", "slurm: time limit of each array task (HH:MM:SS).")
    slurm_cpus_per_task: int = option(1, "slurm: CPUs per task.")
    slurm_mem_per_cpu_gb: int = option(2, "slurm: memory per CPU, in GB.")
    slurm_env_command: str = option("", "slurm: shell line that activates the environment in the job, e.g. "
                                    "'source /path/.venv/bin/activate'; empty = the job inherits this one's.")
    slurm_job_name: str = option("cptnb-prepare", "slurm: job name.")
    ray_address: str = option("", "ray: cluster address for ray.init ('auto', 'ray://host:10001'); empty = the "
                              "running one, or RAY_ADDRESS, or a local cluster.")
    ray_cpus_per_task: int = option(1, "ray: CPUs reserved per task.")
    ray_mem_per_cpu_gb: float = option(2.0, "ray: memory reserved per CPU, in GB.")
    poll_seconds: float = option(10.0, "slurm: seconds between checks that the submitted tasks have finished.")
    timeout_hours: float = option(72.0, "slurm: give up waiting for the tasks after this many hours.")

    def problems(self) -> list[str]:
        """Every invalid value, with the fix (empty when the config is valid)."""
        p: list[str] = []
        choice(p, "executor", self.executor, EXECUTORS)
        for name, low in (("tasks", 0), ("workers", 0), ("split_bytes", 1024), ("local_rank_offset", 0),
                          ("slurm_cpus_per_task", 1), ("slurm_mem_per_cpu_gb", 1), ("ray_cpus_per_task", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                p.append(f"{name} must be an integer >= {low}, got {value!r}")
        if not (isinstance(self.local_tasks, int) and (self.local_tasks == -1 or self.local_tasks >= 1)):
            p.append(f"local_tasks must be -1 (all) or an integer >= 1, got {self.local_tasks!r}")
        for name in ("ray_mem_per_cpu_gb", "poll_seconds", "timeout_hours"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                p.append(f"{name} must be a number > 0, got {value!r}")
        if self.executor == "slurm" and not self.slurm_partition:
            p.append("slurm_partition must name a partition when executor is slurm (sinfo lists them)")
        return p


RECIPE_PATHS[ScaleConfig] = "data.scale"  # where it sits in a Recipe, for error messages
