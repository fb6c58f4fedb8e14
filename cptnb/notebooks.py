"""Execute the kit's notebooks headless (papermill), and check how they are written.

:func:`run_notebook` runs one notebook with parameters (what ``make demo`` and
``cptnb notebook`` call); :func:`run_series` runs several into one folder each.
:func:`structure_problems` checks the house style of CONVENTIONS.md (title and
outcome/time blockquote, install cell, one ``parameters`` cell with a SMOKE
switch, a markdown "why" before every step, no committed outputs), and
:func:`strip_outputs` makes a notebook committable.
"""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path
from typing import Any

from cptnb.errors import CptnbError
from cptnb.paths import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


class NotebookError(CptnbError):
    """A notebook failed while executing, or is not written the way the kit's notebooks are."""


def list_notebooks(directory: str | Path = NOTEBOOK_DIR) -> list[Path]:
    """Every ``*.ipynb`` in ``directory`` (checkpoints excluded), in name order."""
    return sorted(p for p in Path(directory).glob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def notebook_path(name: str) -> Path:
    """'00_quickstart', '00_quickstart.ipynb' or a path -> the notebook file."""
    path = Path(name)
    if path.is_file():
        return path
    candidate = NOTEBOOK_DIR / (name if name.endswith(".ipynb") else f"{name}.ipynb")
    if not candidate.is_file():
        known = ", ".join(p.stem for p in list_notebooks())
        raise CptnbError(f"no notebook {name!r}; known notebooks: {known}")
    return candidate


def run_notebook(
    name: str, out_dir: str | Path, parameters: dict[str, Any] | None = None, timeout_s: int = 3600
) -> Path:
    """Run a notebook top to bottom with ``parameters`` injected; returns the executed copy.

    ``OUT_DIR`` is set to ``out_dir`` (absolute) unless given, so every file the
    notebook writes lands beside its executed copy. A failing cell raises
    :class:`NotebookError` naming the notebook, the error, and the executed copy
    (which holds the full traceback).
    """
    import papermill as pm

    source = notebook_path(name)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    params = {"OUT_DIR": str(out), **(parameters or {})}
    executed = out / source.name
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
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
    except pm.PapermillExecutionError as err:
        raise NotebookError(
            f"{source.name} failed in cell {err.cell_index}: {err.ename}: {err.evalue}\n"
            f"The executed copy with the full traceback is {executed}"
        ) from err
    return executed


def run_series(
    names: list[str] | None,
    out_root: str | Path,
    params_per_notebook: dict[str, dict[str, Any]] | None = None,
    smoke: bool = False,
    timeout_s: int = 3600,
) -> dict[str, Path]:
    """Run notebooks one after another, each into ``out_root/<name>``; returns name -> executed copy.

    ``names`` None means every notebook in ``notebooks/``. ``smoke`` sets
    ``SMOKE=True`` for all (the tiny model, seconds each); ``params_per_notebook``
    maps a notebook name to extra parameters and wins over ``smoke``. Stops at the
    first failure with a :class:`NotebookError`.

    Example::

        run_series(["01_corpus", "04_forgetting"], "runs/series", {"04_forgetting": {"MAX_STEPS": 8}}, smoke=True)
    """
    chosen = [notebook_path(n) for n in names] if names is not None else list_notebooks()
    executed: dict[str, Path] = {}
    for path in chosen:
        params = {"SMOKE": True} if smoke else {}
        params.update((params_per_notebook or {}).get(path.stem, {}))
        executed[path.stem] = run_notebook(str(path), Path(out_root) / path.stem, params, timeout_s)
    return executed


def outputs_of(notebook: str | Path) -> list[dict]:
    """All code-cell outputs of a notebook file (used by the no-outputs check)."""
    data = json.loads(Path(notebook).read_text(encoding="utf-8"))
    return [o for c in data["cells"] if c.get("cell_type") == "code" for o in c.get("outputs", [])]


def strip_outputs(notebook: str | Path) -> Path:
    """Remove outputs and execution counts in place (what a committed notebook holds); returns the path."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nbformat.write(nb, str(notebook))
    return Path(notebook)


# ------------------------------------------------------------------ house-style checks

_INSTALL_GUARD = re.compile(r"find_spec\(\s*[\"']cptnb[\"']\s*\)\s+is\s+None")
_DISPLAY_CALLS = {"display", "print", "plot_run"}
_STRIP_HINT = "run cptnb.notebooks.strip_outputs on the file"


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def is_display_only(code: str) -> bool:
    """True when every statement only shows something (``display(...)``, ``print(...)``, ``plot_run(...)``).

    Such a cell shows the result of the step above it in its own output area
    (e.g. the static loss PNG under a live training panel): it is part of that
    step, so it needs no "why" of its own.
    """
    try:
        tree = ast.parse(code)
    except SyntaxError:  # IPython magics or shell escapes: not a plain display cell
        return False
    calls = [s for s in tree.body if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)]
    return bool(tree.body) and len(calls) == len(tree.body) and all(
        isinstance(s.value.func, ast.Name) and s.value.func.id in _DISPLAY_CALLS for s in calls
    )


def _title_problems(cells: list[dict]) -> list[str]:
    if not cells or cells[0].get("cell_type") != "markdown" or not _source(cells[0]).startswith("# "):
        return ["the first cell must be markdown starting with an H1 title ('# ...')"]
    quote = "\n".join(line for line in _source(cells[0]).splitlines() if line.startswith(">"))
    problems = []
    if not quote:
        problems.append("the title cell needs a '> ' blockquote saying what you get and how long it takes")
    for needle, what in (("T4", "the time on a free Colab T4"), ("CPU", "the time on a CPU")):
        if needle not in quote:
            problems.append(f"the title blockquote must give {what} (mention '{needle}')")
    return problems


def structure_problems(notebook: str | Path) -> list[str]:
    """Every way ``notebook`` departs from the house style (empty when it follows it).

    Rules: H1 title first with a blockquote giving the outcome and the time on a
    Colab T4 and on a CPU; right after it the install cell (guarded by
    ``find_spec("cptnb") is None``); right after that the only ``parameters``-tagged
    cell, which defines ``SMOKE``; no outputs or execution counts. After the
    parameters cell every code cell follows a markdown cell, with two exceptions:
    the cell right after the parameters cell that applies the SMOKE overrides
    (it must be separate, because papermill injects the parameters between the
    two), and display-only cells (:func:`is_display_only`).
    """
    data = json.loads(Path(notebook).read_text(encoding="utf-8"))
    cells = data.get("cells", [])
    problems = _title_problems(cells)
    code = [i for i, c in enumerate(cells) if c.get("cell_type") == "code"]
    tagged = [i for i, c in enumerate(cells) if "parameters" in _tags(c)]
    if len(code) < 2:
        return problems + ["a notebook needs at least an install cell and a parameters cell"]
    install, params = code[0], code[1]
    install_code = _source(cells[install])
    if install != 1 or not _INSTALL_GUARD.search(install_code) or "pip install" not in install_code:
        problems.append("cell 1 (right after the title) must install the kit, guarded by find_spec('cptnb') is None")
    if tagged != [params] or params != install + 1:
        problems.append(
            f"exactly one cell, the one right after the install cell, must be tagged 'parameters'; tagged: {tagged}"
        )
    elif not re.search(r"^SMOKE\s*=", _source(cells[params]), re.MULTILINE):
        problems.append(f"cell {params}: the parameters cell must define SMOKE")
    else:
        # papermill skips a parameter line holding a second '=' (in its comment, say): it is then unlisted in
        # `papermill --help-notebook` and warned about on every run.
        for n, line in enumerate(_source(cells[params]).splitlines(), 1):
            if not line.lstrip().startswith("#") and line.count("=") > 1:
                problems.append(f"cell {params}, line {n}: more than one '=' (papermill cannot read it; "
                                f"write ':' in the comment): {line.strip()[:60]}")
    for i in range(params + 1, len(cells)):
        cell, before = cells[i], cells[i - 1]
        if cell.get("cell_type") != "code" or before.get("cell_type") == "markdown":
            continue
        smoke_overrides = i == params + 1 and _source(cell).lstrip().startswith("if SMOKE")
        if not (smoke_overrides or is_display_only(_source(cell))):
            problems.append(f"cell {i}: a code step needs a markdown cell before it saying why it exists")
    for i in code:
        if cells[i].get("outputs"):
            problems.append(f"cell {i}: committed with outputs; {_STRIP_HINT}")
        if cells[i].get("execution_count") is not None:
            problems.append(f"cell {i}: committed with an execution count; {_STRIP_HINT}")
    return problems
