"""Architecture shapes shipped with the kit, for planning the models people name when the Hub is out of reach.

Each file in ``cptnb/planner/shapes/`` holds one base model's architecture
(the numbers of its published model card and ``config.json``: widths, layers,
heads, vocabulary, positions, RoPE base, tied embeddings), never weights, with
the page it was written from and the hub ids that share it (the instruct
variant and the Unsloth copies have the same shape). :func:`config_for` is
what the planner and the rehearsal call: the model's own config (a local
folder, an alias, the Hub or its cache) when it can be had, else the shipped
shape, said once per model.

Example::

    config, origin = config_for("meta-llama/Llama-3.2-1B")  # offline: origin names the shipped file
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from cptnb.errors import ModelNotAvailableError

log = logging.getLogger(__name__)

SHAPES_DIR = Path(__file__).with_name("shapes")
_said: set[str] = set()  # hub ids whose fallback was already announced in this process


@dataclass(frozen=True)
class KnownShape:
    """One shipped architecture: its name, where the numbers come from, and the hub ids it covers."""

    name: str  # e.g. "Llama-3.2-1B"
    source: str  # the model card / config page the numbers were written from
    published_params: str  # the parameter count the model card states, e.g. "1.23B"
    hub_ids: tuple[str, ...]  # ids that share this architecture
    config: dict[str, Any]  # config.json-style architecture values (model_type included)
    path: Path  # the shipped file

    def to_config(self):
        """A transformers ``PretrainedConfig`` of this shape (no weights, no download)."""
        from transformers import AutoConfig

        values = dict(self.config)
        return AutoConfig.for_model(values.pop("model_type"), **values)


@lru_cache(maxsize=1)
def known_shapes() -> dict[str, KnownShape]:
    """Every shipped shape, keyed by lower-case hub id."""
    shapes: dict[str, KnownShape] = {}
    for path in sorted(SHAPES_DIR.glob("*.json")):
        raw = json.loads(path.read_text(encoding="utf-8"))
        shape = KnownShape(raw["name"], raw["source"], raw["published_params"], tuple(raw["hub_ids"]),
                           raw["config"], path)
        for hub_id in shape.hub_ids:
            shapes[hub_id.lower()] = shape
    return shapes


def known_shape(name: str) -> KnownShape | None:
    """The shipped shape of hub id ``name`` (case-insensitive), or None."""
    return known_shapes().get(name.strip().lower())


def config_for(name: str, trust_remote_code: bool = False, cache_dir: str = "", seed: int = 1309):
    """``(config, origin)`` for ``name``: its own config where it can be had, else its shipped shape.

    ``origin`` is the local folder or hub id the config was read from, or
    ``"shipped shape <file>"``. A hub id that is neither cached nor reachable
    and has no shipped shape raises :class:`~cptnb.errors.ModelNotAvailableError`
    (the message says how to get it), without waiting on the Hub.
    """
    from transformers import AutoConfig

    from cptnb.config import ModelConfig
    from cptnb.models.loading import from_pretrained_or_explain, resolve_source

    source = resolve_source(ModelConfig(name=name, cache_dir=cache_dir, seed=seed))
    try:
        return from_pretrained_or_explain(AutoConfig, source, trust_remote_code=trust_remote_code), source
    except ModelNotAvailableError:
        shape = known_shape(name)
        if shape is None:
            raise
    if name not in _said:
        _said.add(name)
        log.warning("%s: not in the local Hugging Face cache and not available from the Hub; using the "
                    "architecture shipped with cptnb (%s, written from %s)", name, shape.path.name,
                    shape.source.split(" ", 1)[0])
    return shape.to_config(), f"shipped shape {shape.path.name}"
