"""Read documents from files, folders, globs and `datasets` datasets, streaming.

Formats: ``.txt`` (a document per blank-line-separated block, or per file),
``.jsonl`` / ``.json``, ``.parquet``, ``.csv``, a folder written by
``Dataset.save_to_disk``, and any ``datasets.Dataset`` / ``IterableDataset``
object (streaming ones included). Text files may be UTF-8 (with or without
BOM) or UTF-16 with BOM, with LF, CRLF or CR line ends.

Bad input never vanishes: with ``on_error="raise"`` (default) the first bad
record stops the run with a :class:`DataError` naming the file, the line (or
byte offset / row) and what to do; with ``on_error="skip"`` it is counted
under its reason in the :class:`DropCounter` and reading goes on. Reasons:
``undecodable_bytes`` (a .txt block or file, or a .jsonl line, holding bytes that
are not valid UTF-8 / UTF-16: only that document goes, one warning per file names
the lines and byte offsets), ``undecodable_file`` (the same in a .json / .csv file,
which parses as a whole, or a parquet file pyarrow cannot read), ``empty_file``,
``broken_json``, ``missing_text_field``, ``non_string_text_field``.

Size: ``.jsonl`` and ``.txt`` files are decoded :data:`READ_BLOCK_BYTES` at a time,
cut at line (``.jsonl``) or blank-line (``.txt``) boundaries, so reading needs the
same memory for a 100 MB file as for a 100 GB one; ``.json`` and ``.csv`` parse as a
whole. Text formats may be compressed (``.jsonl.gz``, ``.txt.zst``, ...): they are
decompressed as they stream, never unpacked to disk (``.zst`` needs ``zstandard``).
:func:`read_range` reads one byte range of a ``.jsonl`` file, which is how the
scaled path (:mod:`cptnb.data.scale`) lets many tasks share one large file.

Provenance: pass ``files_read`` (a list) and every file opened is appended to it as
``{"path", "bytes", "sha256"}``; text files are hashed from the bytes already read,
parquet files and saved datasets in a separate streaming pass.
"""

from __future__ import annotations

import codecs
import contextlib
import contextvars
import csv
import glob
import gzip
import hashlib
import io
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cptnb.data.documents import Document, DropCounter
from cptnb.errors import CptnbError, DataError

log = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".json", ".txt", ".parquet", ".csv")
COMPRESSIONS = (".gz", ".zst")  # a text format (not parquet) may carry one of these after its own suffix
READ_BLOCK_BYTES = 8 << 20  # .jsonl / .txt files are decoded this many bytes at a time (see the module docstring)
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def data_suffix(path: Path) -> str:
    """The format of ``path`` looking through a compression suffix: ``a.jsonl.zst`` -> ``.jsonl``."""
    if path.suffix in COMPRESSIONS:
        inner = Path(path.stem).suffix
        return inner if inner in (".jsonl", ".json", ".txt", ".csv") else path.suffix
    return path.suffix


def _stem(path: Path) -> str:
    """``a`` for ``a.jsonl`` and for ``a.jsonl.gz`` (document ids are built from it)."""
    return Path(path.stem).stem if path.suffix in COMPRESSIONS else path.stem


def open_binary(path: Path, start: int = 0):
    """``path``'s bytes as a binary stream from byte ``start``; .gz and .zst are decompressed as they are read."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".zst":
        try:
            import zstandard
        except ImportError:
            raise DataError(f"{path}: reading .zst files needs the zstandard package: pip install zstandard") from None
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    fh = open(path, "rb")
    fh.seek(start)
    return fh


def cut_after_line(data: bytes) -> int:
    """Length of the longest prefix of ``data`` made of whole lines (0 when no line ends in it)."""
    return data.rfind(b"\n") + 1


def cut_at_blank_line(data: bytes) -> int:
    """A cut inside the last blank line of ``data`` (0 when there is none): .txt documents never span it."""
    return max(data.rfind(b"\n\n"), data.rfind(b"\n\r\n")) + 1


def read_blocks(fh, cut, limit: int | None = None, block_bytes: int | None = None) -> Iterator[bytes]:
    """Consecutive pieces of the stream ``fh`` (its first ``limit`` bytes when given), each ending where ``cut`` allows.

    Joined, the pieces are exactly the bytes read. A piece is about ``block_bytes``
    long (default :data:`READ_BLOCK_BYTES`), longer only when no cut falls inside a block (one huge line).
    """
    carry, left, block_bytes = b"", limit, block_bytes or READ_BLOCK_BYTES
    while True:
        want = block_bytes if left is None else min(block_bytes, left)
        chunk = fh.read(want) if want > 0 else b""
        if not chunk:
            if carry:
                yield carry
            return
        if left is not None:
            left -= len(chunk)
        data = carry + chunk if carry else chunk
        at = cut(data)
        if at == 0:
            carry = data
            continue
        yield data[:at]
        carry = data[at:]


def count_lines(raw: bytes) -> int:
    """Lines that ``raw`` (whole lines) holds once CRLF and lone CR are read as line ends, as :func:`decode_text` does."""
    return raw.count(b"\n") + raw.count(b"\r") - raw.count(b"\r\n")


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def expand_paths(specs: Iterable[str | Path]) -> list[Path]:
    """Files named by paths, directories (their supported files, sorted) and globs; saved datasets as folders."""
    files: list[Path] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if _is_saved_dataset(path):
            found = [path]
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if data_suffix(p) in SUFFIXES and p.is_file())
        elif path.is_file():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not found:
            # In a notebook the current folder is often notebooks/ or /content, not the repository root.
            relative = "" if path.is_absolute() else f" (read relative to the current folder {Path.cwd()})"
            raise DataError(f"{spec}: no such file, or no {'/'.join(SUFFIXES)} files in it{relative}; check the path")
        files += found
    return files


# Undecodable bytes become this lone surrogate: strict UTF-8 and UTF-16 decoding never produce one, so
# a document holding it is exactly a document that held bad bytes.
BAD_BYTES_MARK = "\udcff"
_BAD_OFFSETS: contextvars.ContextVar[list[int]] = contextvars.ContextVar("cptnb_bad_offsets")


def _mark_bad_bytes(err: UnicodeDecodeError) -> tuple[str, int]:
    _BAD_OFFSETS.get().append(err.start)
    return BAD_BYTES_MARK, err.end


codecs.register_error("cptnb.mark_bad_bytes", _mark_bad_bytes)


@dataclass
class DecodedText:
    """A text file's contents: LF line ends, each run of undecodable bytes replaced by :data:`BAD_BYTES_MARK`.

    ``bad_offsets[k]`` is the byte offset in the file of the ``k``-th mark. Use
    :meth:`locate` to find the bad bytes of one document (a slice of ``text``).
    """

    text: str
    encoding: str  # "UTF-8" or "UTF-16", for messages
    bad_offsets: list[int] = field(default_factory=list)
    # locate() counts lines and marks incrementally from _pos (documents come in order), so one pass is linear.
    _pos: int = field(default=0, init=False, repr=False)
    _line: int = field(default=1, init=False, repr=False)
    _marks_before: int = field(default=0, init=False, repr=False)

    def locate(self, start: int = 0, end: int | None = None) -> tuple[int, int] | None:
        """``(line, byte offset)`` of the first bad bytes in ``text[start:end]``, or None when there are none.

        Calls must come in increasing ``start`` order (one pass over the file, linear time).
        """
        if not self.bad_offsets:
            return None
        at = self.text.find(BAD_BYTES_MARK, max(start, self._pos), len(self.text) if end is None else end)
        if at < 0:
            return None
        self._line += self.text.count("\n", self._pos, at)
        self._marks_before += self.text.count(BAD_BYTES_MARK, self._pos, at)
        self._pos = at
        return self._line, self.bad_offsets[self._marks_before]

    def problem(self, offset: int) -> str:
        return f"bytes at offset {offset} are not valid {self.encoding}"


def decode_text(raw: bytes) -> DecodedText:
    """Decode a text file's bytes, keeping going past bad bytes (see :class:`DecodedText`).

    UTF-16 needs its BOM; UTF-8's BOM is optional. CRLF and CR become LF.
    """
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding, skip = "utf-16", 0  # the codec reads the BOM and reports offsets from the file's start
    else:
        encoding, skip = "utf-8", len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    offsets: list[int] = []
    token = _BAD_OFFSETS.set(offsets)
    try:
        text = str(memoryview(raw)[skip:], encoding, "cptnb.mark_bad_bytes")  # a view: no copy of a large file
    finally:
        _BAD_OFFSETS.reset(token)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return DecodedText(text, encoding.upper(), [offset + skip for offset in offsets])


def _pieces(text: str, separator: str) -> Iterator[tuple[int, str]]:
    """``(start, piece)`` for each piece of ``text.split(separator)``, with its position in ``text``."""
    start = 0
    for piece in text.split(separator):
        yield start, piece
        start += len(piece) + len(separator)


class _Reader:
    """Turns one source at a time into Documents, applying the on_error policy."""

    def __init__(
        self, text_field: str, on_error: str, drops: DropCounter | None, txt_mode: str, files_read: list | None = None
    ):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if txt_mode not in ("blocks", "file"):
            raise ValueError(f"txt_mode must be 'blocks' or 'file', got {txt_mode!r}")
        self.text_field, self.on_error, self.txt_mode = text_field, on_error, txt_mode
        self.drops = drops if drops is not None else DropCounter()
        self.files_read = files_read

    def bad(self, where: str, source: str, reason: str, message: str) -> None:
        if self.on_error == "raise":
            raise DataError(f"{where}: {message}")
        self.drops.drop(source, reason)

    def _record_file(self, path: Path, raw: bytes | None = None) -> None:
        if self.files_read is None:
            return
        if raw is None:  # not read here as one block: hash the file(s) in a streaming pass
            self.files_read += file_manifest([path])
        else:
            self.files_read.append({"path": str(path), "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()})

    def read(self, path: Path) -> Iterator[Document]:
        if _is_saved_dataset(path) or path.suffix == ".parquet":
            self._record_file(path)
        if _is_saved_dataset(path):
            from datasets import load_from_disk

            yield from self.dataset(load_from_disk(str(path)), str(path))
        elif path.suffix == ".parquet":
            yield from self._parquet(path)
        else:
            yield from self._text_file(path)

    def _text_file(self, path: Path) -> Iterator[Document]:
        kind = data_suffix(path)
        if kind == ".jsonl" or (kind == ".txt" and self.txt_mode == "blocks"):
            yield from self.streamed(path)
            return
        source = str(path)
        raw = self._read_all(path)
        self._record_file(path, raw if path.suffix not in COMPRESSIONS else None)
        decoded = decode_text(raw)
        del raw  # the text is all that is needed from here
        if not decoded.text.strip():
            self.bad(str(path), source, "empty_file", "file is empty; remove it or add text")
            return
        if kind == ".txt":  # txt_mode "file": the whole file is one document
            bad = _BadBytes(self, path)
            bad.start_block(decoded)
            if not bad.found(0, len(decoded.text)):
                yield Document(text=decoded.text.strip(), source=source, id=_stem(path))
            bad.warn()
            return
        # .json and .csv parse as a whole: bad bytes anywhere make the whole file unusable.
        found = decoded.locate()
        if found is not None:
            line, offset = found
            self.bad(f"{path}:{line}", source, "undecodable_file", f"{decoded.problem(offset)}; re-save the file as "
                     "UTF-8 or pass on_error='skip' to count and skip it")
            return
        if kind == ".csv":
            yield from self._csv(path, decoded.text)
        else:
            yield from self._json(path, decoded.text)

    def _read_all(self, path: Path) -> bytes:
        if path.suffix not in COMPRESSIONS:
            return path.read_bytes()
        with self._stream_errors(path), open_binary(path) as fh:
            return fh.read()

    @contextlib.contextmanager
    def _stream_errors(self, path: Path):
        """A corrupt .gz / .zst stream becomes a DataError naming the file."""
        try:
            yield
        except (OSError, EOFError, Exception) as err:
            corrupt = isinstance(err, (OSError, EOFError)) or type(err).__name__ == "ZstdError"
            if path.suffix not in COMPRESSIONS or isinstance(err, (FileNotFoundError, CptnbError)) or not corrupt:
                raise
            raise DataError(f"{path}: not a readable {path.suffix[1:]} stream ({err}); re-compress the file") from None

    def streamed(self, path: Path, start: int = 0, length: int | None = None, first_line: int = 1) -> Iterator[Document]:
        """Documents of a .jsonl or .txt (blocks) file, decoded a block at a time; optionally one byte range of it.

        ``start`` must be 0 or the first byte of a line, ``first_line`` that line's
        number (1-based, counted as :func:`count_lines` does); ``length`` None reads to the end.
        """
        source, whole = str(path), start == 0 and length is None
        kind = data_suffix(path)
        bad = _BadBytes(self, path)
        digest = hashlib.sha256() if self.files_read is not None and whole and path.suffix not in COMPRESSIONS else None
        if self.files_read is not None and whole and digest is None:
            self._record_file(path)  # compressed: hash the file on disk in its own streaming pass
        self._txt_next, offset, line, blank = 0, start, first_line, True
        cut = cut_after_line if kind == ".jsonl" else cut_at_blank_line
        with self._stream_errors(path), open_binary(path, start) as fh:
            blocks = read_blocks(fh, cut, length)
            for raw in blocks:
                if offset == 0 and raw.startswith(_UTF16_BOMS):
                    raw += b"".join(blocks)  # UTF-16 cannot be cut at a newline byte: decode the file whole
                if digest is not None:
                    digest.update(raw)
                decoded = decode_text(raw)
                blank = blank and not decoded.text.strip()
                bad.start_block(decoded, line, offset)
                yield from (self._jsonl(path, bad, line) if kind == ".jsonl" else self._txt(path, bad))
                line += decoded.text.count("\n")
                offset += len(raw)
        if digest is not None:
            self.files_read.append({"path": source, "bytes": offset, "sha256": digest.hexdigest()})
        if blank and whole:
            self.bad(str(path), source, "empty_file", "file is empty; remove it or add text")
        bad.warn()

    def _txt(self, path: Path, bad: _BadBytes) -> Iterator[Document]:
        for start, piece in _pieces(bad.decoded.text, "\n\n"):
            block = piece.strip()
            if not block or bad.found(start, start + len(piece)):
                continue
            yield Document(text=block, source=str(path), id=f"{_stem(path)}:{self._txt_next}")
            self._txt_next += 1

    def _jsonl(self, path: Path, bad: _BadBytes, first_line: int = 1) -> Iterator[Document]:
        stem = _stem(path)
        for lineno, (start, line) in enumerate(_pieces(bad.decoded.text, "\n"), first_line):
            if not line.strip() or bad.found(start, start + len(line)):
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                self.bad(f"{path}:{lineno}", str(path), "broken_json", f"not valid JSON ({err.msg}); fix or delete this line")
                continue
            doc = self.record(record, f"{path}:{lineno}", str(path), f"{stem}:{lineno}")
            if doc is not None:
                yield doc

    def _json(self, path: Path, text: str) -> Iterator[Document]:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            self.bad(f"{path}:{err.lineno}", str(path), "broken_json", f"not valid JSON ({err.msg}); fix the file")
            return
        for i, record in enumerate(records if isinstance(records, list) else [records]):
            doc = self.record(record, f"{path}[{i}]", str(path), f"{_stem(path)}:{i}")
            if doc is not None:
                yield doc

    def _csv(self, path: Path, text: str) -> Iterator[Document]:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if self.text_field not in (reader.fieldnames or []):
            self.bad(f"{path}:1", str(path), "missing_text_field",
                     f"no column {self.text_field!r} (columns: {reader.fieldnames}); set text_field")
            return
        for i, row in enumerate(reader):
            doc = self.record(row, f"{path}:{reader.line_num}", str(path), f"{_stem(path)}:{i}")
            if doc is not None:
                yield doc

    def _parquet(self, path: Path) -> Iterator[Document]:
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path)
        except Exception as err:  # pyarrow raises several types for a corrupt file
            self.bad(str(path), str(path), "undecodable_file", f"not a readable parquet file ({err}); re-export it")
            return
        if self.text_field not in parquet.schema_arrow.names:
            self.bad(str(path), str(path), "missing_text_field",
                     f"no column {self.text_field!r} (columns: {parquet.schema_arrow.names}); set text_field")
            return
        row = 0
        for batch in parquet.iter_batches(batch_size=4096):  # streaming: one batch in memory
            for record in batch.to_pylist():
                doc = self.record(record, f"{path} row {row}", str(path), f"{path.stem}:{row}")
                row += 1
                if doc is not None:
                    yield doc

    def dataset(self, dataset, name: str) -> Iterator[Document]:
        """Documents from a datasets Dataset/IterableDataset (or a DatasetDict's splits, in order)."""
        if hasattr(dataset, "keys") and not hasattr(dataset, "features"):  # DatasetDict
            for split in dataset.keys():
                yield from self.dataset(dataset[split], f"{name}/{split}")
            return
        for i, record in enumerate(dataset):
            doc = self.record(record, f"{name} row {i}", name, f"{name}:{i}")
            if doc is not None:
                yield doc

    def record(self, record: Any, where: str, source: str, default_id: str) -> Document | None:
        value = record.get(self.text_field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            missing = not isinstance(record, dict) or record.get(self.text_field) is None
            reason = "missing_text_field" if missing else "non_string_text_field"
            state = "missing" if missing else f"{type(value).__name__}, not a string"
            self.bad(where, source, reason, f"field {self.text_field!r} is {state}; set text_field to the field holding the text")
            return None
        meta = {k: v for k, v in record.items() if k != self.text_field}
        return Document(text=value, source=source, id=str(record.get("id") or default_id), meta=meta)


class _BadBytes:
    """The documents of one .txt / .jsonl file that hold undecodable bytes: dropped one by one, then one warning."""

    SHOWN = 5  # locations named in the warning; the count covers the rest

    def __init__(self, reader: _Reader, path: Path):
        self.reader, self.path = reader, path
        self.decoded = DecodedText("", "UTF-8")
        self._lines_before, self._offset = 0, 0
        self.where: list[tuple[int, int]] = []  # (line, byte offset) of each dropped document's first bad bytes

    def start_block(self, decoded: DecodedText, first_line: int = 1, offset: int = 0) -> None:
        """The next decoded block of the file, which starts at line ``first_line`` and byte ``offset``."""
        self.decoded, self._lines_before, self._offset = decoded, first_line - 1, offset

    def found(self, start: int, end: int) -> bool:
        """Whether ``text[start:end]`` (one document of the block) holds bad bytes; if so it is dropped (or raises)."""
        found = self.decoded.locate(start, end)
        if found is None:
            return False
        line, offset = found[0] + self._lines_before, found[1] + self._offset
        self.reader.bad(f"{self.path}:{line}", str(self.path), "undecodable_bytes",
                        f"{self.decoded.problem(offset)}; re-save the file as {self.decoded.encoding}, or pass "
                        "on_error='skip' to drop only the documents holding such bytes")
        self.where.append((line, offset))
        return True

    def warn(self) -> None:
        if not self.where:
            return
        shown = ", ".join(f"line {line} byte {offset}" for line, offset in self.where[: self.SHOWN])
        more = f" and {len(self.where) - self.SHOWN} more" if len(self.where) > self.SHOWN else ""
        log.warning("%s: dropped %d document(s) holding bytes that are not valid %s (%s%s); re-save the file as %s "
                    "to keep them", self.path, len(self.where), self.decoded.encoding, shown, more,
                    self.decoded.encoding)


def _dataset_name(dataset) -> str:
    info = getattr(dataset, "info", None)
    return (getattr(info, "dataset_name", None) or type(dataset).__name__) if info is not None else type(dataset).__name__


def read_documents(
    sources: Iterable[Any],
    text_field: str = "text",
    on_error: str = "raise",
    drops: DropCounter | None = None,
    txt_mode: str = "blocks",
    files_read: list | None = None,
) -> Iterator[Document]:
    """Stream documents from paths, globs, folders or ``datasets`` objects, in a stable order.

    ``files_read``, when given, collects ``{"path", "bytes", "sha256"}`` for each file opened.

    Example::

        docs = list(read_documents(["data_samples/vi"]))
        docs = read_documents([load_dataset("some/corpus", split="train", streaming=True)])
    """
    reader = _Reader(text_field, on_error, drops, txt_mode, files_read)
    paths: list[Any] = []
    for source in sources:
        if isinstance(source, (str, Path)):
            paths.append(source)
            continue
        if paths:
            for path in expand_paths(paths):
                yield from reader.read(path)
            paths = []
        yield from reader.dataset(source, _dataset_name(source))
    for path in expand_paths(paths):
        yield from reader.read(path)


def read_range(
    path: str | Path,
    start: int,
    length: int | None,
    first_line: int,
    text_field: str = "text",
    on_error: str = "raise",
    drops: DropCounter | None = None,
) -> Iterator[Document]:
    """The documents of bytes ``[start, start + length)`` of a .jsonl file, as :func:`read_documents` reads them there.

    ``start`` is the first byte of line ``first_line``; ids, error messages and drop
    reasons are those of reading the whole file. One task of the scaled path reads one range.
    """
    reader = _Reader(text_field, on_error, drops, "blocks")
    yield from reader.streamed(Path(path), start, length, first_line)


def read_records(path: Path) -> Iterator[tuple[str, Any]]:
    """``(where, record)`` for each record of a .jsonl / .json / .parquet file of structured items.

    For evaluation task files (their loader and decontamination read them alike).
    ``where`` is ``file:line``, ``file:item N`` or ``file:row N``; an unreadable
    file or line raises :class:`DataError` naming it.
    """
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as err:
            raise DataError(f"{path}: not a readable parquet file ({err}); re-export it") from None
        for i, row in enumerate(table.to_pylist()):
            yield f"{path}:row {i}", row
        return
    decoded = decode_text(path.read_bytes())
    found = decoded.locate()
    if found is not None:
        line, offset = found
        raise DataError(f"{path}:{line}: {decoded.problem(offset)}; re-save the file as UTF-8")
    text = decoded.text
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg}); fix the file") from None
        for i, row in enumerate(rows):
            yield f"{path}:item {i}", row
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{path}:{lineno}: not valid JSON ({err.msg}, column {err.colno}); each line must be one JSON object"
            ) from None
        yield f"{path}:{lineno}", row


# --- provenance: which bytes a run read (hashes for report.json and the model card) -------------------

HASH_BLOCK_BYTES = 1 << 20  # read 1 MiB at a time: files of any size hash in bounded memory


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(HASH_BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(specs: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for path in expand_paths(specs):
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return files


def file_manifest(paths: Iterable[str | Path], role: str = "") -> list[dict[str, Any]]:
    """One entry per file under ``paths``: ``path``, ``bytes``, ``sha256`` (and ``role`` when given).

    Raises :class:`~cptnb.errors.DataError` naming a path that matches no file.
    """
    entries = []
    for path in _files(paths):
        entry: dict[str, Any] = {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256_file(path)}
        if role:
            entry["role"] = role
        entries.append(entry)
    return entries


# --- the corpus in a model card -----------------------------------------------------------------------

DATA_ROLES = {  # DataConfig field -> role of its files
    "sources": "domain",
    "replay_sources": "replay",
    "heldout_domain": "heldout_domain",
    "heldout_general": "heldout_general",
    "eval_tasks": "eval_tasks",
}


def data_manifest(data_cfg) -> list[dict[str, Any]]:
    """:func:`file_manifest` of every path a :class:`~cptnb.config.DataConfig` names, with its role.

    A path that no longer exists gets an entry saying so instead of an error: a card
    written later should show the gap, not fail.
    """
    entries: list[dict[str, Any]] = []
    for name, role in DATA_ROLES.items():
        for path in getattr(data_cfg, name):
            try:
                entries += file_manifest([path], role=role)
            except DataError:
                entries.append({"path": str(path), "bytes": "", "sha256": "not found", "role": role})
    return entries
