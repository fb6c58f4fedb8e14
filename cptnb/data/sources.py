"""Read documents from .jsonl / .json / .txt files, directories and globs.

Bad input never vanishes: with ``on_error="raise"`` (default) the first bad
record stops the run with a :class:`DataError` naming the file, the line and
what to do; with ``on_error="skip"`` it is counted under its reason in the
given :class:`DropCounter` and reading goes on.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Iterable, Iterator

from cptnb.data.documents import Document, DropCounter
from cptnb.errors import DataError

SUFFIXES = (".jsonl", ".json", ".txt")


def expand_paths(specs: Iterable[str | Path]) -> list[Path]:
    """Files named by paths, directories (their supported files, sorted) and globs."""
    files: list[Path] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        elif path.is_file():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not found:
            raise DataError(f"{spec}: no such file, or no {'/'.join(SUFFIXES)} files in it; check the path")
        files += found
    return files


def _decode(path: Path) -> tuple[str | None, str]:
    """(text, "") or (None, "LINE: what is wrong"): UTF-8, with or without BOM."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig"), ""
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        return None, (
            f"{line}: bytes at offset {err.start} are not valid UTF-8; re-save the file as UTF-8 "
            "or pass on_error='skip' to count and skip it"
        )


class _Reader:
    def __init__(self, text_field: str, on_error: str, drops: DropCounter | None):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.text_field, self.on_error, self.drops = text_field, on_error, drops or DropCounter()

    def bad(self, where: str, source: str, reason: str, message: str) -> None:
        if self.on_error == "raise":
            raise DataError(f"{where}: {message}")
        self.drops.drop(source, reason)

    def read(self, path: Path) -> Iterator[Document]:
        source = str(path)
        text, problem = _decode(path)
        if text is None:
            line, message = problem.split(": ", 1)
            self.bad(f"{path}:{line}", source, "undecodable_file", message)
            return
        if not text.strip():
            self.bad(str(path), source, "empty_file", "file is empty; remove it or add text")
            return
        if path.suffix == ".txt":
            # One document per blank-line-separated block.
            blocks = [b.strip() for b in text.replace("\r\n", "\n").replace("\r", "\n").split("\n\n")]
            for i, block in enumerate(b for b in blocks if b):
                yield Document(text=block, source=source, id=f"{path.stem}:{i}")
            return
        lines = text.splitlines() if path.suffix == ".jsonl" else None
        if lines is None:
            yield from self._json_array(path, text)
            return
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                self.bad(f"{path}:{lineno}", source, "broken_json", f"not valid JSON ({err.msg}); fix or delete this line")
                continue
            doc = self._record(record, f"{path}:{lineno}", source, f"{path.stem}:{lineno}")
            if doc is not None:
                yield doc

    def _json_array(self, path: Path, text: str) -> Iterator[Document]:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            self.bad(f"{path}:{err.lineno}", str(path), "broken_json", f"not valid JSON ({err.msg})")
            return
        if isinstance(records, dict):
            records = [records]
        for i, record in enumerate(records):
            doc = self._record(record, f"{path}[{i}]", str(path), f"{path.stem}:{i}")
            if doc is not None:
                yield doc

    def _record(self, record, where: str, source: str, default_id: str) -> Document | None:
        value = record.get(self.text_field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            problem = "missing" if not isinstance(record, dict) or self.text_field not in record else "not a string"
            self.bad(where, source, f"{'missing' if problem == 'missing' else 'non_string'}_text_field",
                     f"field {self.text_field!r} is {problem}; set text_field to the field holding the text")
            return None
        meta = {k: v for k, v in record.items() if k != self.text_field}
        return Document(text=value, source=source, id=str(record.get("id", default_id)), meta=meta)


def read_documents(
    paths: Iterable[str | Path],
    text_field: str = "text",
    on_error: str = "raise",
    drops: DropCounter | None = None,
) -> Iterator[Document]:
    """Stream documents from files, directories or globs, in a stable order.

    Example::

        docs = list(read_documents(["data_samples/vi"]))
    """
    reader = _Reader(text_field, on_error, drops)
    for path in expand_paths(paths):
        yield from reader.read(path)
