"""data.packing: document — every token kept, and each document inside a pack scored as if it were alone."""

import pytest
import torch

from cptnb.config import DataConfig, TrainConfig
from cptnb.data import Document, pack_documents
from cptnb.errors import ConfigError
from cptnb.train import document_packing
from cptnb.train.trainer import train

BLOCK = 48


@pytest.fixture(scope="module")
def loaded(tiny):
    return tiny(method="full", dtype="fp32")


@pytest.fixture(scope="module")
def docs(vi_docs):
    # Short and long documents, so that blocks hold several documents and some documents cross block edges.
    return [Document(d.text[: 40 + 37 * i], "vi") for i, d in enumerate(vi_docs[:8])]


def _pieces(tokenizer, docs):
    """Each document's ids + EOS, in packing order."""
    return [tokenizer(d.text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for d in docs]


def test_document_blocks_are_the_concat_blocks_plus_the_pieces_that_fill_them(loaded, docs, tmp_path):
    tok = loaded.tokenizer
    concat = pack_documents(docs, tok, BLOCK)
    document = pack_documents(docs, tok, BLOCK, packing="document")
    on_disk = pack_documents(iter(docs), tok, BLOCK, packing="document", out_dir=tmp_path / "train")
    assert concat.dataset.column_names == ["input_ids"]
    assert document.dataset.column_names == ["input_ids", "seq_lengths"]
    assert document.dataset["input_ids"] == concat.dataset["input_ids"]  # the same tokens in the same blocks
    assert on_disk.dataset.to_dict() == document.dataset.to_dict() and on_disk.summary() == document.summary()
    lengths = document.dataset["seq_lengths"]
    assert all(sum(row) == BLOCK for row in lengths) and any(len(row) > 1 for row in lengths)
    # No token lost: the pieces, joined across block edges, are the documents' lengths up to the remainder.
    doc_lengths = [len(p) for p in _pieces(tok, docs)]
    assert document.tokens_in == sum(doc_lengths) == document.tokens_packed + document.remainder_tokens
    flat = [n for row in lengths for n in row]
    rebuilt, edges, total = [], set(), 0
    for row in lengths:
        total += len(row)
        edges.add(total - 1)  # the last piece of a block may continue in the next block
    carry = 0
    for i, n in enumerate(flat):
        carry += n
        if i not in edges or carry == doc_lengths[len(rebuilt)]:
            rebuilt.append(carry)
            carry = 0
    assert rebuilt == doc_lengths[: len(rebuilt)]
    assert sum(rebuilt) + carry + document.remainder_tokens == sum(doc_lengths)
    assert document.pieces == len(flat) and document.summary()["pieces"] == len(flat)


def _per_token_losses(model, batch):
    """Next-token cross-entropy at every target of ``batch`` (labels != -100), shaped like the labels minus one."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    inputs["use_cache"] = False  # as in training (Trainer sets config.use_cache = False; a cache hides packing)
    with torch.no_grad():
        logits = model(**inputs).logits.float()
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), batch["labels"][:, 1:], ignore_index=-100, reduction="none"
    )
    return losses, batch["labels"][:, 1:] != -100


def _alone(model, ids):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits.float()[0]
    return torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="none")


def _piece_losses(model, rows, collator):
    """[(piece ids, its per-token losses inside the pack)] for every piece of every row, through ``collator``."""
    batch = collator(rows)
    losses, targets = _per_token_losses(model, batch)
    flattened = batch["input_ids"].shape[0] == 1 and len(rows) > 1
    found = []
    for b, row in enumerate(rows):
        line, start = (0, b * BLOCK) if flattened else (b, 0)
        for n in row["seq_lengths"]:
            # A piece at start..start+n-1 is scored at targets start+1..start+n-1: losses[start:start+n-1].
            assert batch["input_ids"][line, start:start + n].tolist() == row["input_ids"][start % BLOCK:][:n]
            assert bool(targets[line, start:start + n - 1].all())  # every token after the first is a target
            if start > 0:
                assert not bool(targets[line, start - 1])  # its first token is not: nothing of its own before it
            found.append((row["input_ids"][start % BLOCK:][:n], losses[line, start:start + n - 1]))
            start += n
    return found


@pytest.mark.parametrize(("attention", "flat"), [("sdpa", False), ("sdpa", True), ("eager", False)],
                         ids=["sdpa-rows", "sdpa-flattened", "eager-rows"])
def test_each_document_in_a_pack_has_the_loss_it_has_alone(loaded, docs, attention, flat):
    model = loaded.model.eval()
    model.set_attn_implementation(attention)
    try:
        packed = pack_documents(docs, loaded.tokenizer, BLOCK, packing="document")
        rows = [packed.dataset[i] for i in range(min(4, len(packed.dataset)))]
        pad = loaded.tokenizer.pad_token_id
        collator = document_packing.flat_collator(pad) if flat else document_packing.document_collator(pad)
        pieces = _piece_losses(model, rows, collator)
        assert len(pieces) > len(rows)  # several documents per block
        worst_doc, worst_token = 0.0, 0.0
        for ids, in_pack in pieces:
            if len(ids) < 2:
                continue
            alone = _alone(model, ids)
            worst_doc = max(worst_doc, abs(float(in_pack.mean() - alone.mean())))
            worst_token = max(worst_token, float((in_pack - alone).abs().max()))
        assert worst_doc < 1e-5 and worst_token < 1e-4

        # The same blocks under concat attention: later documents see earlier ones, and their losses move.
        concat_rows = [{"input_ids": r["input_ids"]} for r in rows]
        losses, _ = _per_token_losses(model, {"input_ids": torch.tensor([r["input_ids"] for r in concat_rows]),
                                              "labels": torch.tensor([r["input_ids"] for r in concat_rows])})
        first_row = rows[0]["seq_lengths"]
        second = slice(first_row[0], first_row[0] + first_row[1] - 1)
        ids = rows[0]["input_ids"][first_row[0]:first_row[0] + first_row[1]]
        assert float((losses[0, second] - _alone(model, ids)).abs().max()) > 1e-3
    finally:
        model.set_attn_implementation("sdpa")


def test_collator_restarts_positions_masks_piece_starts_and_leaves_concat_rows_alone(loaded, docs):
    pad = loaded.tokenizer.pad_token_id
    packed = pack_documents(docs, loaded.tokenizer, BLOCK, packing="document")
    row = packed.dataset[0]
    batch = document_packing.document_collator(pad)([row])
    assert "attention_mask" not in batch and batch["input_ids"].shape == (1, BLOCK) and batch["use_cache"] is False
    starts = [0] + torch.tensor(row["seq_lengths"]).cumsum(0).tolist()[:-1]
    assert torch.nonzero(batch["position_ids"][0] == 0).flatten().tolist() == starts
    assert (batch["labels"][0, starts] == -100).all() and int((batch["labels"] == -100).sum()) == len(starts)
    index = document_packing.piece_index(row["seq_lengths"])
    assert index.tolist() == [i for i, n in enumerate(row["seq_lengths"]) for _ in range(n)]
    # Held-out blocks packed without boundaries go through the same collator as plain causal rows.
    plain = document_packing.document_collator(pad)([{"input_ids": row["input_ids"]}])
    assert plain["position_ids"].tolist() == [list(range(BLOCK))] and (plain["labels"][0, 1:] != -100).all()


def test_flat_batches_only_for_flash_attention_and_unsloth(loaded):
    assert document_packing.needs_flat_batches(loaded.model, "unsloth")
    assert not document_packing.needs_flat_batches(loaded.model, "transformers")  # sdpa

    class Flash:
        class config:
            _attn_implementation = "flash_attention_2"

    assert document_packing.needs_flat_batches(Flash(), "transformers")


def test_train_on_document_blocks_uses_the_document_collator(tiny, docs, tmp_path, monkeypatch):
    lora = tiny(method="lora")
    packed = pack_documents(docs * 2, lora.tokenizer, BLOCK, packing="document")
    seen = []
    make = document_packing.document_collator

    def spy(pad_token_id):
        collator = make(pad_token_id)
        original = collator.torch_call

        def call(examples):
            batch = original(examples)
            seen.append(int((batch["position_ids"] == 0).sum()))
            return batch

        collator.torch_call = call
        return collator

    monkeypatch.setattr(document_packing, "document_collator", spy)
    cfg = TrainConfig(output_dir=str(tmp_path), max_steps=2, per_device_batch_size=2, learning_rate=1e-3, eval_steps=2)
    heldout = packed.dataset.select(range(2))  # held-out blocks packed the same way go through the same collator
    result = train(lora, packed.dataset, cfg, eval_datasets={"domain": heldout})
    assert result.steps == 2 and torch.isfinite(torch.tensor(result.final_train_loss))
    assert seen and max(seen) > 2  # batches of 2 rows with more than one document each
    assert any("heldout_domain_loss" in e for e in result.history)


def test_packing_field_is_checked():
    assert DataConfig().packing == "concat"
    with pytest.raises(ConfigError, match="packing must be one of concat, document"):
        DataConfig(packing="documents")
