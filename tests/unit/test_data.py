import json
import unicodedata
from pathlib import Path

import pytest

from cptnb.data import DropCounter, clean_documents, clean_text, pack_documents, read_documents
from cptnb.data.documents import Document
from cptnb.errors import DataError


def test_nfc_makes_decomposed_vietnamese_identical():
    composed = "Tiếng Việt rất đẹp"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert clean_text(decomposed) == clean_text(composed) == composed


def test_clean_removes_control_and_zero_width_and_folds_spaces():
    assert clean_text("Xin\u200b chào\x07  \t bạn\r\n\r\n\r\n\r\nnhé ") == "Xin chào bạn\n\nnhé"


def test_short_documents_are_dropped_and_counted():
    drops = DropCounter()
    docs = [Document("ngắn", "a.jsonl"), Document("đủ dài để giữ lại trong kho dữ liệu", "a.jsonl")]
    kept = list(clean_documents(docs, min_chars=10, drops=drops))
    assert [d.text for d in kept] == ["đủ dài để giữ lại trong kho dữ liệu"]
    assert drops.by_reason("a.jsonl") == {"too_short": 1}


def test_broken_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "một"}\n{"text": "hai"\n{"text": "ba"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"c\.jsonl:2: not valid JSON"):
        list(read_documents([path]))
    drops = DropCounter()
    docs = list(read_documents([path], on_error="skip", drops=drops))
    assert [d.text for d in docs] == ["một", "ba"]
    assert drops.by_reason() == {"broken_json": 1}


def test_missing_text_field_names_the_field(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"content": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"c\.jsonl:1: field 'text' is missing"):
        list(read_documents([path]))


def test_utf8_bom_and_crlf_txt_blocks(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("\ufeffĐoạn một.\r\n\r\nĐoạn hai,\r\ncòn tiếp.".encode("utf-8"))
    assert [d.text for d in read_documents([path])] == ["Đoạn một.", "Đoạn hai,\ncòn tiếp."]


def test_undecodable_file_is_reported_or_counted(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"ok\n\xff\xfe\xfa broken")
    with pytest.raises(DataError, match=r"bad\.txt:2: bytes at offset 3 are not valid UTF-8"):
        list(read_documents([path]))
    drops = DropCounter()
    assert list(read_documents([path], on_error="skip", drops=drops)) == []
    assert drops.by_reason() == {"undecodable_bytes": 1}  # the file's one block held the bad bytes


def test_missing_path_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no such file") as err:
        list(read_documents([tmp_path / "nope.jsonl"]))
    assert "current folder" not in str(err.value)  # an absolute path needs no hint
    monkeypatch.chdir(tmp_path)  # a notebook started in notebooks/ reading "data_samples/vi"
    with pytest.raises(DataError, match=f"data_samples/vi: no such file.*relative to the current folder {tmp_path}"):
        list(read_documents(["data_samples/vi"]))


class _CharTokenizer:
    """One token per character; EOS = 0. Makes packing arithmetic checkable by hand."""

    eos_token_id = 0

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[ord(c) for c in t] for t in texts]}


def test_packing_accounts_for_every_token_and_splits_long_documents():
    docs = [Document("a" * 10, "s"), Document("b" * 25, "s"), Document("c" * 3, "s")]
    packed = pack_documents(docs, _CharTokenizer(), block_size=8, batch_docs=2)
    assert packed.tokens_in == 10 + 25 + 3 + 3  # one EOS per document
    assert packed.tokens_in == packed.tokens_packed + packed.remainder_tokens
    assert packed.num_blocks == 41 // 8 and packed.remainder_tokens == 41 % 8
    stream = [t for block in packed.dataset["input_ids"] for t in block]
    expected = [ord("a")] * 10 + [0] + [ord("b")] * 25 + [0] + [ord("c")] * 3 + [0]
    assert stream == expected[: len(stream)]  # order kept, long doc split across blocks, nothing truncated
    assert all(len(b) == 8 for b in packed.dataset["input_ids"])


def test_fertility_is_tokens_per_word_without_eos():
    packed = pack_documents([Document("ab cd", "s")], _CharTokenizer(), block_size=2)
    assert packed.tokens_per_word == pytest.approx(5 / 2)
    assert packed.tokens_per_byte == pytest.approx(1.0)


def test_utf16_with_bom_and_cr_line_ends(tmp_path):
    path = tmp_path / "u16.txt"
    path.write_bytes("Dòng một\rvẫn đoạn một\r\rĐoạn hai".encode("utf-16"))
    assert [d.text for d in read_documents([path])] == ["Dòng một\nvẫn đoạn một", "Đoạn hai"]


def test_txt_file_mode_gives_one_document_per_file(tmp_path):
    (tmp_path / "a.txt").write_text("Một.\n\nHai.", encoding="utf-8")
    docs = list(read_documents([tmp_path / "a.txt"], txt_mode="file"))
    assert [d.text for d in docs] == ["Một.\n\nHai."]


def test_csv_parquet_json_and_saved_dataset(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    (tmp_path / "a.csv").write_text('id,body\n1,"xin chào, bạn"\n2,tạm biệt\n', encoding="utf-8")
    pq.write_table(pa.table({"body": ["từ parquet", None]}), tmp_path / "b.parquet")
    (tmp_path / "c.json").write_text(json.dumps([{"body": "từ json"}]), encoding="utf-8")
    Dataset.from_dict({"body": ["từ datasets"]}).save_to_disk(str(tmp_path / "saved"))
    drops = DropCounter()
    texts = [d.text for d in read_documents(
        [tmp_path / "a.csv", tmp_path / "b.parquet", tmp_path / "c.json", tmp_path / "saved"],
        text_field="body", on_error="skip", drops=drops)]
    assert texts == ["xin chào, bạn", "tạm biệt", "từ parquet", "từ json", "từ datasets"]
    assert drops.by_reason() == {"missing_text_field": 1}  # the parquet row whose body is null


def test_streaming_datasets_object_and_non_string_field(tmp_path):
    from datasets import Dataset

    stream = Dataset.from_dict({"text": ["một", "hai"]}).to_iterable_dataset()
    assert [d.text for d in read_documents([stream])] == ["một", "hai"]
    path = tmp_path / "n.jsonl"
    path.write_text('{"text": 5}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"n\.jsonl:1: field 'text' is int, not a string"):
        list(read_documents([path]))


def test_empty_file_is_an_error_or_counted(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="file is empty"):
        list(read_documents([path]))
    drops = DropCounter()
    assert list(read_documents([path], on_error="skip", drops=drops)) == []
    assert drops.by_reason() == {"empty_file": 1}


def test_packing_to_disk_streams_and_matches_in_memory(tmp_path):
    docs = [Document(chr(97 + i % 26) * (5 + i), "s") for i in range(40)]
    in_memory = pack_documents(docs, _CharTokenizer(), block_size=16)
    on_disk = pack_documents(iter(docs), _CharTokenizer(), block_size=16, out_dir=tmp_path / "train")
    assert on_disk.summary() == in_memory.summary()
    assert on_disk.dataset["input_ids"] == in_memory.dataset["input_ids"]
    assert (tmp_path / "train" / "dataset_info.json").is_file()
    assert not list(tmp_path.glob("pack-*"))  # the temporary cache is gone


def test_pretokenized_documents_are_not_tokenized_again():
    class Exploding(_CharTokenizer):
        def __call__(self, texts, add_special_tokens=False):
            assert not texts, "pack re-tokenized a document that already had tokens"
            return {"input_ids": []}

    doc = Document("abc", "s", tokens=[1, 2, 3])
    packed = pack_documents([doc], Exploding(), block_size=2)
    assert packed.dataset["input_ids"] == [[1, 2], [3, 0]]


def test_mojibake_is_repaired_and_good_text_untouched():
    good = "Tiếng Việt rất đẹp, phở Hà Nội"
    broken = good.encode("utf-8").decode("cp1252", errors="replace")
    assert broken != good
    assert clean_text(broken) == good
    assert clean_text(good) == good


def test_files_read_records_size_and_hash_of_each_input(tmp_path):
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.jsonl").write_text('{"text": "một"}\n{"text": "hai"}\n', encoding="utf-8")
    (tmp_path / "b.txt").write_text("Ba.\n\nBốn.", encoding="utf-8")
    pq.write_table(pa.table({"text": ["năm"]}), tmp_path / "c.parquet")
    files: list = []
    texts = [d.text for d in read_documents([tmp_path], files_read=files)]
    assert texts == ["một", "hai", "Ba.", "Bốn.", "năm"]
    assert [e["path"] for e in files] == [str(tmp_path / n) for n in ("a.jsonl", "b.txt", "c.parquet")]
    for entry in files:
        raw = Path(entry["path"]).read_bytes()
        assert entry == {"path": entry["path"], "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}


def test_pack_can_leave_word_counts_to_the_caller():
    docs = [Document("ab cd", "s"), Document("ef", "s")]
    counted = pack_documents(docs, _CharTokenizer(), block_size=2)
    skipped = pack_documents(docs, _CharTokenizer(), block_size=2, count_text=False)
    assert (counted.words, counted.bytes) == (3, 7) and (skipped.words, skipped.bytes) == (0, 0)
    assert skipped.dataset["input_ids"] == counted.dataset["input_ids"]


def test_one_tokenizer_call_per_batch_and_none_for_pretokenized_documents():
    class Counting(_CharTokenizer):
        def __init__(self):
            self.calls = []

        def __call__(self, texts, add_special_tokens=False):
            self.calls.append(list(texts))
            return super().__call__(texts, add_special_tokens)

    tok = Counting()
    docs = [Document("ab", "s", tokens=[7]), Document("cd", "s"), Document("ef", "s"), Document("gh", "s")]
    packed = pack_documents(docs, tok, block_size=3, batch_docs=2)
    assert tok.calls == [["cd"], ["ef", "gh"]]  # the pretokenized "ab" is not encoded again
    stream = [7, 0, 99, 100, 0, 101, 102, 0, 103, 104, 0]  # tokens, EOS = 0 after each document
    assert [t for b in packed.dataset["input_ids"] for t in b] == stream[:9] and packed.remainder_tokens == 2
