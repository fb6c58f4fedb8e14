"""The corpus stage beyond one process: the kit's own stages as datatrove steps, on its executors.

``prepare(cfg, ...)`` with ``cfg.scale.executor`` set to ``local``, ``slurm`` or
``ray`` runs in two phases:

1. **shards** (datatrove, ``tasks`` tasks, in parallel): each task reads its input
   files or byte ranges of large ``.jsonl`` files (:mod:`.plan`), runs clean,
   language id and the quality filters (the same :class:`~cptnb.data.parallel.DocumentStages`
   the in-process workers run), screens for contamination and computes the
   dedup keys (exact hash and MinHash band keys, :meth:`~cptnb.data.dedup.Deduplicator.document_keys`),
   and writes the survivors and their keys to one shard per work unit (:mod:`.steps`).
2. **merge** (this process, streaming): the shards are read back in input order;
   the dedup decisions are taken over the precomputed keys by the same
   :class:`~cptnb.data.dedup.Deduplicator` code, contaminated survivors are dropped,
   and the held-out split, replay mix and packing run as in process (:mod:`.merge`).

The per-source accounting is rebuilt from datatrove's per-task ``stats/*.json``,
so ``report.json`` has the same shape and the same numbers as in process.

Only :mod:`.config` is imported by the recipe; datatrove is needed only when an
executor other than ``inprocess`` runs (``pip install cptnb[scale]``).
"""

from cptnb.data.scale.config import EXECUTORS, ScaleConfig

__all__ = ["EXECUTORS", "ScaleConfig"]
