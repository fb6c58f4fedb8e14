"""Where the kit finds its sample data and keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path

from cptnb.errors import CptnbError

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_samples_dir() -> Path:
    """The authored sample corpora and tasks: $CPTNB_DATA_SAMPLES or the repo's data_samples/."""
    path = Path(os.environ.get("CPTNB_DATA_SAMPLES", REPO_ROOT / "data_samples"))
    if not path.is_dir():
        raise CptnbError(
            f"sample data not found at {path}. Run from a clone of the cptnb repository "
            "(git clone ... && pip install -e .) or set CPTNB_DATA_SAMPLES to its data_samples folder."
        )
    return path


def cache_dir(configured: str = "") -> Path:
    """Cache for built models: the configured path, $CPTNB_CACHE, or ~/.cache/cptnb."""
    path = Path(configured or os.environ.get("CPTNB_CACHE", Path.home() / ".cache" / "cptnb")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
