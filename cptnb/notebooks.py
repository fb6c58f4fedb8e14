"""Execute the kit's notebooks headless (papermill), as `make demo` and the tests do."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cptnb.errors import CptnbError
from cptnb.paths import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def notebook_path(name: str) -> Path:
    """'00_quickstart', '00_quickstart.ipynb' or a path -> the notebook file."""
    path = Path(name)
    if path.is_file():
        return path
    candidate = NOTEBOOK_DIR / (name if name.endswith(".ipynb") else f"{name}.ipynb")
    if not candidate.is_file():
        known = ", ".join(sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")))
        raise CptnbError(f"no notebook {name!r}; known notebooks: {known}")
    return candidate


def run_notebook(name: str, out_dir: str | Path, parameters: dict[str, Any] | None = None, timeout_s: int = 3600) -> Path:
    """Run a notebook top to bottom with ``parameters`` injected; returns the executed copy.

    ``OUT_DIR`` is set to ``out_dir`` (absolute) unless given, so every file the
    notebook writes lands beside its executed copy.
    """
    import papermill as pm

    source = notebook_path(name)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    params = {"OUT_DIR": str(out), **(parameters or {})}
    executed = out / source.name
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    pm.execute_notebook(
        str(source),
        str(executed),
        parameters=params,
        cwd=str(REPO_ROOT),
        kernel_name="python3",
        execution_timeout=timeout_s,
        progress_bar=False,
        log_output=True,
    )
    return executed


def outputs_of(notebook: str | Path) -> list[dict]:
    """All code-cell outputs of a notebook file (used by the no-outputs check)."""
    data = json.loads(Path(notebook).read_text(encoding="utf-8"))
    return [o for c in data["cells"] if c.get("cell_type") == "code" for o in c.get("outputs", [])]
