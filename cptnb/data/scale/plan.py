"""Work units of the scaled path: whole input files, or byte ranges of large .jsonl files.

datatrove hands out work per input file, so one 20 GB file would keep one task busy.
Here a plain (uncompressed, UTF-8) ``.jsonl`` file larger than ``split_bytes`` is cut
into ranges of about ``split_bytes`` that start at line starts, each with the number of
its first line, so that a task reading one range yields exactly the documents (ids,
error messages, drop reasons) that reading the whole file yields there.

Finding the cuts reads such a file once, in blocks (about 1-2 GB/s from the page cache);
every other input is one unit. Compressed files cannot be cut (a .gz / .zst stream has
no random access): give large inputs as several compressed files, or uncompressed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cptnb.data.sources import COMPRESSIONS, count_lines, cut_after_line, data_suffix, expand_paths, read_blocks
from cptnb.errors import DataError

PLAN_BLOCK_BYTES = 16 << 20  # bytes read at a time while looking for the cuts


@dataclass(frozen=True)
class WorkUnit:
    """One task's piece of input: a whole file (``length`` None) or ``length`` bytes from ``start``."""

    path: str
    start: int = 0
    length: int | None = None
    first_line: int = 1

    @property
    def whole(self) -> bool:
        return self.length is None


def splittable(path: Path) -> bool:
    """Plain .jsonl that does not start with a UTF-16 byte-order mark (UTF-16 cannot be cut at a newline byte)."""
    if data_suffix(path) != ".jsonl" or path.suffix in COMPRESSIONS:
        return False
    with open(path, "rb") as fh:
        return not fh.read(2) in (b"\xff\xfe", b"\xfe\xff")


def byte_ranges(path: Path, split_bytes: int) -> list[WorkUnit]:
    """Ranges of about ``split_bytes`` covering ``path``, each starting at a line start, with its line number."""
    units, start, first_line, size, lines = [], 0, 1, 0, 0
    with open(path, "rb") as fh:
        for raw in read_blocks(fh, cut_after_line, block_bytes=min(split_bytes, PLAN_BLOCK_BYTES)):
            size += len(raw)
            lines += count_lines(raw)
            if size >= split_bytes:
                units.append(WorkUnit(str(path), start, size, first_line))
                start, first_line, size, lines = start + size, first_line + lines, 0, 0
    if size or not units:
        units.append(WorkUnit(str(path), start, size, first_line))
    return units


def plan_units(sources: list[Any], split_bytes: int) -> list[WorkUnit]:
    """The work units of ``sources`` in reading order (the order in which ``read_documents`` reads them)."""
    not_paths = [s for s in sources if not isinstance(s, (str, Path))]
    if not_paths:
        raise DataError(
            f"the scaled corpus path reads files, but sources hold a {type(not_paths[0]).__name__} object; save it "
            "with dataset.save_to_disk(folder) or to_json(file.jsonl) and list the path, or use data.scale.executor "
            "inprocess"
        )
    units: list[WorkUnit] = []
    for path in expand_paths(sources):
        if path.is_file() and path.stat().st_size > split_bytes and splittable(path):
            units += byte_ranges(path, split_bytes)
        else:
            units.append(WorkUnit(str(path)))
    return units


def fingerprint(units: list[WorkUnit], settings: dict[str, Any]) -> str:
    """A hash of the inputs (paths, sizes, modification times) and the settings that decide what a shard holds."""
    files = sorted({u.path for u in units})
    stamp = [(f, Path(f).stat().st_size, Path(f).stat().st_mtime_ns) for f in files if Path(f).is_file()]
    payload = json.dumps({"units": [asdict(u) for u in units], "files": stamp, "settings": settings},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()
