"""The extension record that travels with a model or adapter, and fitting a plain base to an extended adapter.

An adapter trained with an extended vocabulary carries the whole resized
embedding matrix (``train_embeddings``), so it applies to the *original* base once
the base has the same number of rows: :func:`fit_base_to_adapter` resizes it when
the adapter folder holds ``cptnb_vocab.json``, and explains the mismatch when it
does not. Nothing here imports the model-loading code, so loading and export can
call it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cptnb.vocab.errors import VocabError
from cptnb.vocab.learn import RECORD_NAME, VocabExtension


def write_record(folder: Path, extension: VocabExtension, resize: dict[str, Any]) -> Path:
    """``cptnb_vocab.json``: the extension (tokens, merges, pieces, corpus) and how the model was resized."""
    path = extension.save(Path(folder) / RECORD_NAME)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["resize"] = resize
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def read_record(folder: str | Path) -> dict[str, Any] | None:
    """The ``cptnb_vocab.json`` in ``folder`` as a dict, or None when the folder holds none (no extension)."""
    path = Path(folder) / RECORD_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def fit_base_to_adapter(model, adapter_dir: str | Path) -> bool:
    """Resize a plain base ``model`` so an adapter trained with an extended vocabulary loads on it; True if resized.

    The adapter holds the trained embedding matrix in full, so the values of the
    base's new rows do not matter, only their number. A base with neither the
    old nor the extended number of rows gets a :class:`VocabError` naming both.
    """
    record = read_record(adapter_dir)
    rows = model.get_input_embeddings().weight.shape[0]
    if record is None:
        saved = _saved_embedding_rows(Path(adapter_dir))
        if saved is not None and saved != rows:
            raise VocabError(
                f"the adapter in {adapter_dir} has embeddings for {saved} ids but the base model has {rows}: it was "
                f"trained with a different (extended?) vocabulary. Load it on the base it was trained on, or resize "
                f"the base first: model.resize_token_embeddings({saved})"
            )
        return False
    resize = record["resize"]
    if rows == resize["rows_after"]:
        return False
    if rows != resize["rows_before"]:
        raise VocabError(
            f"the adapter in {adapter_dir} extends a base of {resize['rows_before']} embedding rows to "
            f"{resize['rows_after']}, but this base has {rows}: load it on the model it was trained from"
        )
    model.resize_token_embeddings(resize["rows_after"], mean_resizing=False)
    model.config.cptnb_vocab = resize
    if resize["padding_ids"] and getattr(model, "generation_config", None) is not None:
        padding = set(range(*resize["padding_ids"]))
        model.generation_config.suppress_tokens = sorted(set(model.generation_config.suppress_tokens or []) | padding)
    return True


def _saved_embedding_rows(adapter_dir: Path) -> int | None:
    from safetensors import safe_open

    path = adapter_dir / "adapter_model.safetensors"
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as fh:
        for key in fh.keys():  # noqa: SIM118 (safe_open is not iterable)
            if "embed_tokens" in key and "lora_" not in key:
                return int(fh.get_slice(key).get_shape()[0])
    return None


def card_lines(trained_dir: str | Path, run_dir: str | Path | None = None) -> list[str]:
    """The model card's "Vocabulary extension" section for an adapter/model folder, or [] when it has no record."""
    record = read_record(trained_dir)
    if record is None:
        return []
    resize, corpus = record["resize"], record.get("corpus") or {}
    n = len(record["new_tokens"])
    lines = [
        "## Vocabulary extension", "",
        f"- {n:,} tokens added (ids {resize['first_new_id']:,} to {resize['tokenizer_size'] - 1:,}), learned with "
        f"cptnb by continuing the base BPE on {corpus.get('name') or 'the domain corpus'} ({corpus.get('docs', 0):,} "
        f"documents, {corpus.get('words', 0):,} words; merges seen at least {record.get('min_frequency', 2)} times); "
        "every old id keeps its meaning",
        f"- new rows initialised as {resize['method'].replace('_', ' ')}; embeddings "
        f"{'tied' if resize['tied'] else 'untied (input and output rows both initialised)'}",
        f"- embedding matrix {resize['rows_before']:,} -> {resize['rows_after']:,} rows (padded to a multiple of "
        f"{resize['pad_to_multiple_of']}); padding ids {resize['padding_ids'] or 'none'} map to no token and are in "
        "generation_config.suppress_tokens",
    ]
    report_path = Path(run_dir) / "vocab" / "report.json" if run_dir else None
    if report_path is not None and report_path.is_file():
        report = json.loads(report_path.read_text(encoding="utf-8"))
        for name, entry in report.get("corpora", {}).items():
            lines.append(
                f"- {name}: {entry['before']['tokens_per_word']:.3f} -> {entry['after']['tokens_per_word']:.3f} "
                f"tokens per word ({100 * entry['tokens_per_word_change']:+.1f}%), "
                f"{entry['changed_docs']} of {entry['before']['docs']} documents tokenized differently"
            )
    lines += [
        "- to apply `adapter/` to the original base with PEFT, resize the base first: "
        f"`base.resize_token_embeddings({resize['rows_after']})` (the adapter holds the trained rows); "
        "`cptnb.vocab.fit_base_to_adapter(base, adapter_dir)` does this",
        "",
    ]
    return lines
