"""What an extension changes: fertility before and after, the share of new ids, and what a corpus now costs.

Fertility is measured the way :mod:`cptnb.data.pack` reports it (tokens per
whitespace word and per UTF-8 byte, specials excluded), on the domain text and on
general text, with the base and the extended tokenizer over the same documents.
``general_changed_docs`` counts the general documents whose ids changed at all:
with the merges ranked after the base merges this is 0 unless a new merge also
fires inside general words (see :mod:`cptnb.vocab.learn`).

Example::

    report = extension_report(base_tok, extended_tok, {"vi": vi_texts, "en": en_texts}, general="en")
    print(report_markdown(report))
"""

from __future__ import annotations

from typing import Any

from cptnb.tables import markdown_table


def encode_all(tokenizer, texts: list[str]) -> list[list[int]]:
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts if t]


def fertility(tokenizer, texts: list[str], first_new_id: int | None = None, ids: list[list[int]] | None = None) -> dict[str, Any]:
    """Tokens per word and per byte of ``texts`` (and the share of tokens with id >= ``first_new_id``)."""
    texts = [t for t in texts if t]
    ids = ids if ids is not None else encode_all(tokenizer, texts)
    tokens = sum(len(i) for i in ids)
    words = sum(len(t.split()) for t in texts)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    out: dict[str, Any] = {
        "docs": len(texts), "words": words, "bytes": n_bytes, "tokens": tokens,
        "tokens_per_word": tokens / max(words, 1), "tokens_per_byte": tokens / max(n_bytes, 1),
    }
    if first_new_id is not None:
        out["new_id_share"] = sum(1 for row in ids for i in row if i >= first_new_id) / max(tokens, 1)
    return out


def extension_report(
    base_tokenizer, extended_tokenizer, corpora: dict[str, list[str]], general: str | None = None,
    first_new_id: int | None = None, block_tokens: int = 0,
) -> dict[str, Any]:
    """Per corpus: fertility before and after, the change, and (``block_tokens``) blocks per epoch before and after.

    ``general`` names the corpus whose tokenization should not change; its
    documents with any changed id are counted in ``changed_docs``.
    """
    first_new_id = first_new_id if first_new_id is not None else len(base_tokenizer)
    out: dict[str, Any] = {"first_new_id": first_new_id, "added_tokens": len(extended_tokenizer) - len(base_tokenizer),
                           "corpora": {}}
    for name, texts in corpora.items():
        texts = [t for t in texts if t]
        ids_before, ids_after = encode_all(base_tokenizer, texts), encode_all(extended_tokenizer, texts)
        before = fertility(base_tokenizer, texts, ids=ids_before)
        after = fertility(extended_tokenizer, texts, first_new_id, ids=ids_after)
        entry = {
            "before": before, "after": after,
            "tokens_per_word_change": after["tokens_per_word"] / before["tokens_per_word"] - 1,
            "changed_docs": sum(a != b for a, b in zip(ids_before, ids_after)),
            "general": name == general,
        }
        if block_tokens:
            # What one epoch costs: tokens (with one EOS per document) and full blocks of block_tokens.
            for side in ("before", "after"):
                tokens = entry[side]["tokens"] + entry[side]["docs"]
                entry[side]["tokens_per_epoch"] = tokens
                entry[side]["blocks_per_epoch"] = tokens // block_tokens
        out["corpora"][name] = entry
    return out


def report_markdown(report: dict[str, Any]) -> str:
    """The fertility table of :func:`extension_report`: one row per corpus."""
    rows = []
    for name, e in report["corpora"].items():
        b, a = e["before"], e["after"]
        rows.append([
            name + (" (general)" if e["general"] else ""), b["docs"], f"{b['tokens_per_word']:.3f}",
            f"{a['tokens_per_word']:.3f}", f"{100 * e['tokens_per_word_change']:+.1f}%",
            f"{b['tokens_per_byte']:.4f}", f"{a['tokens_per_byte']:.4f}", f"{100 * a.get('new_id_share', 0):.1f}%",
            e["changed_docs"], a.get("tokens_per_epoch", b["tokens"]),
        ])
    header = ["corpus", "docs", "tokens/word before", "after", "change", "tokens/byte before", "after",
              "new ids share", "docs tokenized differently", "tokens per epoch after"]
    return markdown_table(header, rows, right=range(1, 10))
