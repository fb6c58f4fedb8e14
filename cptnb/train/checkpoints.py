"""Checkpoints of a run: which are complete, which one a resume means, and whether it can continue.

transformers' Trainer writes ``checkpoint-N`` folders; a run killed while saving
leaves one without its trainer state, and ``get_last_checkpoint`` would still
pick it. Everything here reads only what is on disk, so a new session (or a
new Colab runtime with the folder on Drive) sees exactly what survived.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from cptnb.config import TrainConfig
from cptnb.errors import CptnbError
from cptnb.guidance import warn_nothing_to_resume

log = logging.getLogger(__name__)

# Written last into a checkpoint by transformers' Trainer: its presence marks a complete checkpoint.
TRAINER_STATE_FILE = "trainer_state.json"


def checkpoint_step(checkpoint: Path) -> int | None:
    """The optimizer step a checkpoint holds, or None when it is incomplete (killed while saving)."""
    try:
        return int(json.loads((Path(checkpoint) / TRAINER_STATE_FILE).read_text(encoding="utf-8"))["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Every ``checkpoint-N`` folder in ``output_dir``, oldest first (complete or not)."""
    numbered = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(numbered, key=lambda p: int(p.name.split("-")[-1]))


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` in ``output_dir`` whose trainer state was fully written.

    transformers' own ``get_last_checkpoint`` picks the highest number even when a
    SIGKILL interrupted its saving, and resuming from it then fails.
    """
    for path in reversed(list_checkpoints(output_dir)):
        if checkpoint_step(path) is not None:
            return path
        log.warning("%s is incomplete (no readable %s; killed while saving?): skipped", path, TRAINER_STATE_FILE)
    return None


def resolve_checkpoint(output_dir: str | Path, resume: bool | str) -> Path | None:
    """Which checkpoint ``resume`` means: None (start afresh), the last complete one, or a given path.

    ``resume`` is False, True / "auto" (the last complete checkpoint in ``output_dir``,
    or a fresh start when there is none), or the path of a checkpoint folder.
    """
    if resume is False or resume is None or resume == "":
        return None
    if resume is True or resume == "auto":
        found = last_complete_checkpoint(Path(output_dir))
        if found is None:
            warn_nothing_to_resume(output_dir)
        return found
    path = Path(resume)
    if checkpoint_step(path) is None:
        raise CptnbError(
            f"cannot resume from {path}: it is not a complete checkpoint (no readable {TRAINER_STATE_FILE}). "
            f"Pass a checkpoint-N folder written by a previous run, or resume='auto' for the last complete one."
        )
    return path


def check_resumable(checkpoint: Path | None, cfg: TrainConfig) -> int:
    """The step ``checkpoint`` holds (0 for none); an error when it already reached ``cfg.max_steps``.

    transformers would otherwise run one step past the end and log it.
    """
    if checkpoint is None:
        return 0
    step = checkpoint_step(checkpoint) or 0
    if 0 < cfg.max_steps <= step:
        raise CptnbError(
            f"{checkpoint} is at step {step} and train.max_steps is {cfg.max_steps}: that run is complete. "
            "Raise train.max_steps to train further, or leave out resume (or pick a new output_dir) to start over."
        )
    return step
