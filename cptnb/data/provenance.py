"""Provenance: which bytes a run read (or an export wrote), and the corpus report as Markdown for a model card.

Paths are expanded the way corpus sources are (:func:`cptnb.data.sources.expand_paths`:
files, folders of supported files, globs, ``save_to_disk`` folders), so the manifest
of ``data.sources`` lists exactly the files the pipeline read. A saved dataset folder
is listed file by file, since its Arrow shards are what holds the text.

Example::

    file_manifest(["data_samples/vi"], role="domain")
    # [{"path": ".../encyclopedic.jsonl", "bytes": 91234, "sha256": "9f2c...", "role": "domain"}, ...]
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cptnb.data.sources import expand_paths
from cptnb.errors import DataError

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


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_cell(v)}" for k, v in value.items())
    return str(value).replace("|", "\\|")


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured Markdown table; floats to 4 decimals, dicts as 'key: value' lists."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def corpus_markdown(report: dict | None, data_cfg=None) -> list[str]:
    """Lines describing a corpus ``report.json``: documents per source and drop reason, tokens, dedup, file hashes.

    File hashes come from the report's ``source_files`` (recorded when the corpus
    was prepared); older reports lack them, and then ``data_cfg``'s files are hashed now.
    """
    if not report:
        return ["No corpus report was found (`data/report.json`); the training data is not documented here."]
    if report.get("source_files"):
        files, how = report["source_files"], "recorded when the corpus was prepared"
    else:
        files = data_manifest(data_cfg) if data_cfg is not None else []
        how = "computed at export time (the files may have changed since training)"
    roles = {Path(f["path"]).resolve(): f.get("role", "") for f in files}
    rows = [
        [Path(src).name, roles.get(Path(src).resolve(), ""), e["docs_in"], e["docs_kept"], e["dropped"] or "none"]
        for src, e in report.get("sources", {}).items()
    ]
    total = report.get("total", {})
    rows.append(["**total**", "", total.get("docs_in", ""), total.get("docs_kept", ""), total.get("dropped") or "none"])
    lines = [
        "Documents per source (dropped by reason):",
        "",
        markdown_table(["source", "role", "docs in", "kept", "dropped"], rows),
        "",
    ]
    tokens = report.get("tokens", {})
    if tokens:
        lines.append(
            f"Packed into {tokens.get('blocks', 0):,} blocks of {tokens.get('block_size', '?')} tokens "
            f"({tokens.get('tokens_packed', 0):,} tokens; replay share {tokens.get('replay_share_achieved', 0):.1%}, "
            f"target {tokens.get('replay_share_target', 0):.0%}; {tokens.get('tokens_per_word', '?')} tokens per word)."
        )
    for side, d in (report.get("dedup") or {}).items():
        if d.get("docs_in"):
            lines.append(
                f"Deduplication ({side}): {d['exact_duplicates']} exact and "
                f"{d['near_duplicates']} near duplicates removed."
            )
    if files:
        table = [[f["path"], f.get("role", ""), f["bytes"], f"`{f['sha256']}`"] for f in files]
        lines += ["", f"Files, with SHA-256 {how}:", "", markdown_table(["file", "role", "bytes", "sha256"], table)]
    return lines


def decontamination_markdown(report: dict | None, data_cfg=None) -> list[str]:
    """Lines saying whether training text was checked against the evaluation tasks, and what was removed."""
    if data_cfg is None or report is None:
        return ["Unknown: no recipe or corpus report came with this export."]
    if not data_cfg.eval_tasks or not data_cfg.decontam.enabled:
        return [
            "Not run: no evaluation task files were given (`data.eval_tasks`), so evaluation scores may be inflated."
        ]
    dropped = report.get("total", {}).get("dropped", {}).get("contaminated", 0)
    hits = (report.get("decontamination") or {}).get("files_hit", {})
    lines = [
        (
            f"Training documents sharing a {data_cfg.decontam.ngram_words}-word sequence with the evaluation items "
            f"in {', '.join(map(str, data_cfg.eval_tasks))} were removed: {dropped} document(s)."
        )
    ]
    if hits:
        lines += ["", markdown_table(["evaluation file", "documents matched"], [[k, v] for k, v in hits.items()])]
    return lines
