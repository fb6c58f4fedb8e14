"""The training stage: one path for LoRA, QLoRA and full continued pretraining.

- :mod:`~cptnb.train.trainer`: :func:`train` on packed blocks (TRL's trainer, Unsloth's when loaded);
- :mod:`~cptnb.train.run`: :func:`run_recipe`, a whole recipe (prepare, load, train, save) as ``cptnb train`` runs it;
- :mod:`~cptnb.train.schedules`: warmup + cosine / linear / constant learning-rate multipliers;
- :mod:`~cptnb.train.checkpoints`: which ``checkpoint-N`` folders are complete and what a resume means;
- :mod:`~cptnb.train.launch`: torchrun for 1-8 devices and the per-strategy (DDP, FSDP, DeepSpeed) arguments;
- :mod:`~cptnb.train.monitor`: metric loggers (JSONL, live notebook panel) and every read of ``metrics.jsonl``.
"""

from cptnb.train.run import run_recipe
from cptnb.train.trainer import TrainResult, train

__all__ = ["TrainResult", "run_recipe", "train"]
