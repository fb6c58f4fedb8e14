"""Rough edges of the corpus stage (issue 13): bad bytes cost one document, not a file; too little text stops clearly."""

import json
import logging

import pytest

from cptnb.config import DataConfig
from cptnb.data import DropCounter, read_documents
from cptnb.data.pipeline import CorpusStream, prepare
from cptnb.errors import CorpusTooSmallError, CptnbError, DataError
from cptnb.paths import data_samples_dir

BLOCKS = ["Đoạn một nói về chợ phiên.", "Đoạn hai có byte hỏng: ", "Đoạn ba kể chuyện mùa thu.", "Đoạn bốn."]
BAD = b"\xff\xfe"  # never valid UTF-8


def bad_txt(path):
    """Four blank-line blocks; the second holds two bad bytes. Returns (path, line, byte offset of the bad bytes)."""
    head = ("\r\n\r\n".join(BLOCKS[:2])).encode("utf-8")  # CRLF: offsets count the file's own bytes
    path.write_bytes(b"\xef\xbb\xbf" + head + BAD + b"\r\n\r\n" + "\r\n\r\n".join(BLOCKS[2:]).encode("utf-8"))
    return path, 3, 3 + len(head)


def quiet_data(**overrides) -> DataConfig:
    """Only reading and cleaning: the edge cases are about what is read, not what the filters keep."""
    values = {"on_error": "skip", "heldout_share": 0.0, "heldout_domain": [], "heldout_general": [], "num_proc": 1,
              "filters": {"enabled": False}, "langid": {"enabled": False}, "dedup": {"exact": False, "near": False}}
    return DataConfig(**{**values, **overrides})


def test_txt_block_with_bad_bytes_is_the_only_one_dropped(tmp_path, caplog):
    path, line, offset = bad_txt(tmp_path / "scrape.txt")
    drops = DropCounter()
    with caplog.at_level(logging.WARNING, logger="cptnb.data.sources"):
        docs = list(read_documents([path], on_error="skip", drops=drops))
    assert [d.text for d in docs] == [BLOCKS[0], BLOCKS[2], BLOCKS[3]]
    assert drops.by_reason() == {"undecodable_bytes": 1}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and f"line {line} byte {offset}" in warnings[0]
    with pytest.raises(DataError, match=rf"scrape\.txt:{line}: bytes at offset {offset} are not valid UTF-8"):
        list(read_documents([path]))


def test_txt_file_mode_drops_the_file_as_its_one_document(tmp_path):
    path, line, offset = bad_txt(tmp_path / "scrape.txt")
    drops = DropCounter()
    assert list(read_documents([path], on_error="skip", drops=drops, txt_mode="file")) == []
    assert drops.by_reason() == {"undecodable_bytes": 1}
    with pytest.raises(DataError, match=rf"scrape\.txt:{line}: bytes at offset {offset} "):
        list(read_documents([path], txt_mode="file"))


def test_jsonl_line_with_bad_bytes_is_the_only_one_dropped(tmp_path, caplog):
    path = tmp_path / "lines.jsonl"
    good = [json.dumps({"text": t}, ensure_ascii=False).encode("utf-8") for t in ("một", "ba", "bốn")]
    bad = b'{"text": "hai ' + BAD + b'"}'
    path.write_bytes(b"\n".join([good[0], bad, b"", good[1], good[2] + b"\xe1"]) + b"\n")
    drops = DropCounter()
    with caplog.at_level(logging.WARNING, logger="cptnb.data.sources"):
        docs = list(read_documents([path], on_error="skip", drops=drops))
    assert [d.text for d in docs] == ["một", "ba"]
    assert drops.by_reason() == {"undecodable_bytes": 2}  # line 2, and line 5 (a truncated character at its end)
    second = len(good[0]) + 1 + bad.index(BAD)
    fifth = len(good[0]) + len(bad) + len(good[1]) + 4 + len(good[2])
    assert f"line 2 byte {second}, line 5 byte {fifth}" in caplog.text
    with pytest.raises(DataError, match=rf"lines\.jsonl:2: bytes at offset {second} are not valid UTF-8"):
        list(read_documents([path]))


def test_utf16_bad_code_unit_drops_its_block_only(tmp_path):
    path = tmp_path / "u16.txt"
    lone_surrogate = b"\x00\xdc"  # little-endian U+DC00 with no high surrogate before it
    head = "Một.\n\nHai ".encode("utf-16")  # BOM included: offsets count from the file's first byte
    path.write_bytes(head + lone_surrogate + "\n\nBa.".encode("utf-16-le"))
    drops = DropCounter()
    assert [d.text for d in read_documents([path], on_error="skip", drops=drops)] == ["Một.", "Ba."]
    assert drops.by_reason() == {"undecodable_bytes": 1}
    with pytest.raises(DataError, match=rf"u16\.txt:3: bytes at offset {len(head)} are not valid UTF-16"):
        list(read_documents([path]))


def test_report_counts_the_files_real_documents(tmp_path):
    path, _, _ = bad_txt(tmp_path / "scrape.txt")
    stream = CorpusStream(quiet_data(sources=[str(path)], min_chars=1), [str(path)], "vi")
    kept = list(stream.documents())
    entry = stream.report()[str(path)]
    assert len(kept) == entry["docs_kept"] == 3
    assert entry["docs_in"] == 4 == entry["docs_kept"] + sum(entry["dropped"].values())
    assert entry["dropped"] == {"undecodable_bytes": 1}


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return tiny(method="full").tokenizer


def one_good_document(tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_text((data_samples_dir() / "vi" / "news.jsonl").read_text(encoding="utf-8").splitlines()[0] + "\n",
                    encoding="utf-8")
    return path


def test_one_document_shorter_than_a_block_stops_with_the_report_written(tmp_path, tokenizer):
    path = one_good_document(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(CorpusTooSmallError) as caught:
        prepare(quiet_data(sources=[str(path)]), tokenizer, out, block_tokens=4096)
    assert isinstance(caught.value, CptnbError)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert (out / "funnel.png").is_file()
    tokens = report["tokens"]["tokens_in"]
    assert 2 <= tokens < 4096 and report["tokens"]["blocks"] == 0 and report["total"]["docs_kept"] == 1
    message = str(caught.value)
    assert "1 of 1 document(s) survived" in message and f"{tokens:,} tokens" in message
    fits = 1 << (tokens.bit_length() - 1)
    assert f"data.block_tokens {fits} or less (now 4096)" in message and str(out / "report.json") in message
    assert tokens >= fits and tokens < 2 * fits  # the suggested block really is filled once
    prepared = prepare(quiet_data(sources=[str(path)], block_tokens=fits), tokenizer, tmp_path / "again")
    assert prepared.packed.num_blocks == 1


def test_txt_whose_documents_were_all_dropped_says_why(tmp_path, tokenizer):
    path = tmp_path / "dropped.txt"
    path.write_bytes(b"ok\n\nhai " + BAD + b"\n\nxin")
    with pytest.raises(CorpusTooSmallError) as caught:
        prepare(quiet_data(sources=[str(path)]), tokenizer, tmp_path / "out", block_tokens=64)
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert report["total"] == {"docs_in": 3, "docs_kept": 0, "chars_in": 5, "chars_kept": 0,
                               "dropped": {"too_short": 2, "undecodable_bytes": 1}}
    message = str(caught.value)
    assert "0 of 3 document(s) survived" in message and "none is left for training" in message
    assert "too_short 2, undecodable_bytes 1" in message
    assert "data.min_chars" in message and "re-save the files as UTF-8" in message


def test_cli_prepare_prints_the_message_and_exits_2(tmp_path, capsys):
    from cptnb.cli import main

    recipe = tmp_path / "recipe.yaml"
    data = quiet_data(sources=[str(one_good_document(tmp_path))]).to_dict()
    recipe.write_text(json.dumps({"data": data, "model": {"name": "tiny-llama", "max_seq_len_tokens": 4096}}),
                      encoding="utf-8")  # JSON is YAML
    assert main(["prepare", "--config", str(recipe), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "cptnb: error: too little text to train on: 1 of 1 document(s) survived" in err
    assert "Traceback" not in err and (tmp_path / "out" / "report.json").is_file()


def test_notebook_shows_the_message_without_a_traceback(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.run_cell("from cptnb.errors import CorpusTooSmallError\n"
                       "def prepare_corpus():\n    raise CorpusTooSmallError('too little text to train on: 0 of 2')\n"
                       "prepare_corpus()")
    finally:
        InteractiveShell.clear_instance()
    out = capsys.readouterr().out
    assert "CorpusTooSmallError: too little text to train on: 0 of 2" in out
    assert "Traceback" not in out and "prepare_corpus()" not in out


def test_every_kit_error_shows_in_a_notebook_without_a_traceback(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.run_cell("from cptnb.config import TrainConfig\nTrainConfig(max_steps=-5)")
    finally:
        InteractiveShell.clear_instance()
    out = capsys.readouterr().out
    assert "ConfigError: TrainConfig has 1 problem(s)" in out and "max_steps must be > 0" in out
    assert "Traceback" not in out and "__post_init__" not in out
