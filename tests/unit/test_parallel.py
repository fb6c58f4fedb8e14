"""Per-document stages in worker processes: same output and counts as one process, in order, bounded, errors surface."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from cptnb.config import DataConfig
from cptnb.data import clean, parallel
from cptnb.data.documents import Document
from cptnb.data.parallel import DocumentStages, StagePool, chunked, document_stages, worker_count
from cptnb.data.pipeline import CorpusStream
from cptnb.errors import ConfigError, CptnbError, DataError
from cptnb.paths import data_samples_dir

ROOT = data_samples_dir()
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="worker tests use fork (Linux)")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The Vietnamese and English samples, plus a file with a duplicate, a short and an English document."""
    tmp = tmp_path_factory.mktemp("par")
    vi = [json.loads(line) for line in (ROOT / "vi" / "news.jsonl").read_text(encoding="utf-8").splitlines()]
    en = [json.loads(line) for line in (ROOT / "en" / "general.jsonl").read_text(encoding="utf-8").splitlines()]
    extra = tmp / "extra.jsonl"
    rows = [{"text": vi[0]["text"]}, {"text": "ngắn"}, {"text": en[0]["text"]}, {"text": vi[3]["text"] + " Hết."}]
    extra.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return [str(ROOT / "vi"), str(ROOT / "en"), str(extra)]


def _run(sources, workers: int, chunk_docs: int = 7):
    cfg = DataConfig(sources=sources, chunk_docs=chunk_docs, num_proc=workers)
    with StagePool(workers) as pool:
        stream = CorpusStream(cfg, sources, "vi", None, pool)
        docs = [(d.id, d.source, d.text, d.meta) for d in stream.documents()]
    taps = [(t.name, dict(t.docs), dict(t.chars)) for t in stream.taps]
    return docs, taps, dict(stream.drops.docs), dict(stream.drops.chars), stream.report()


def test_workers_give_the_same_documents_counts_and_report(sources):
    one = _run(sources, workers=1)
    two = _run(sources, workers=2)
    docs, taps, drop_docs, _, report = two
    assert two == one
    # The comparison is not empty: documents were kept, and dropped for several reasons.
    assert len(docs) > 100 and {reason for _, reason in drop_docs} >= {"too_short", "wrong_language", "exact_duplicate"}
    assert [name for name, _, _ in taps] == ["read", "clean", "language", "quality", "dedup"]
    for entry in report.values():
        assert entry["docs_in"] == entry["docs_kept"] + sum(entry["dropped"].values())


def test_chunk_size_does_not_change_the_result(sources):
    assert _run(sources, workers=1, chunk_docs=1) == _run(sources, workers=1, chunk_docs=500)


def test_order_is_kept_when_later_chunks_finish_first(monkeypatch):
    real = clean.clean_text

    def slow_for_the_first_chunk(text):
        if text.startswith("0-"):
            time.sleep(0.3)  # the first chunk finishes last
        return real(text)

    monkeypatch.setattr(clean, "clean_text", slow_for_the_first_chunk)  # forked workers inherit the patch
    docs = [Document(f"{i // 5}-{i} đủ dài để giữ lại sau khi làm sạch", "s.jsonl", id=str(i)) for i in range(40)]
    stages = DocumentStages(min_chars=5)
    with StagePool(2) as pool:
        out = [d.id for result in pool.map(stages, chunked(docs, 5)) for d in result.docs]
    assert out == [str(i) for i in range(40)]


def test_documents_in_flight_stay_bounded():
    pulled = []

    def stream():
        for i in range(10_000):
            pulled.append(i)
            yield Document(f"tài liệu số {i} đủ dài để giữ lại", "s.jsonl", id=str(i))

    with StagePool(2) as pool:
        results = pool.map(DocumentStages(min_chars=5), chunked(stream(), 10))
        first = next(results)
        assert len(first.docs) == 10
        assert len(pulled) <= (pool.window + 1) * 10  # not the whole stream
        results.close()


def test_an_error_in_a_worker_names_the_stage_and_the_document():
    docs = [Document("một tài liệu bình thường", "a.jsonl", id="a:1"), Document(None, "a.jsonl", id="a:2")]
    with StagePool(2) as pool, pytest.raises(AttributeError) as err:
        list(pool.map(DocumentStages(min_chars=5), [docs]))
    if sys.version_info >= (3, 11):
        assert "raised by the clean stage while processing document 'a:2' of a.jsonl" in "".join(err.value.__notes__)


def test_a_dead_worker_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(clean, "clean_text", lambda text: os._exit(3) if text == "boom" else text)
    with StagePool(2) as pool, pytest.raises(CptnbError, match="worker process .* died .*num_proc: 1"):
        list(pool.map(DocumentStages(min_chars=1), [[Document("boom", "a.jsonl")]]))


def test_read_errors_still_name_file_and_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "một hai ba bốn năm"}\n{"text": "hai"\n', encoding="utf-8")
    cfg = DataConfig(sources=[str(path)])
    with StagePool(2) as pool, pytest.raises(DataError, match=r"c\.jsonl:2: not valid JSON"):
        list(CorpusStream(cfg, [str(path)], "vi", None, pool).documents())


def test_worker_count(monkeypatch, tmp_path):
    small = tmp_path / "small.jsonl"
    small.write_text('{"text": "x"}\n', encoding="utf-8")
    monkeypatch.setattr(parallel, "usable_cores", lambda: 4)
    assert worker_count(3, [str(small)]) == 3 and worker_count(1, [str(small)]) == 1
    assert worker_count("auto", [str(small)]) == 1  # too small to be worth processes
    assert worker_count("auto", [object()]) == 4  # a datasets object: size unknown, treated as large
    monkeypatch.setattr(parallel, "AUTO_MIN_INPUT_BYTES", small.stat().st_size)
    assert worker_count("auto", [str(tmp_path)]) == 4
    monkeypatch.setattr(parallel, "usable_cores", lambda: 1)
    assert worker_count("auto", [object()]) == 1


def test_document_stages_follow_the_config():
    cfg = DataConfig(filters={"enabled": False})
    assert document_stages(cfg, "vi").names == ["clean", "language"]
    assert document_stages(cfg, "").names == ["clean"]
    assert document_stages(DataConfig(), "en").filters.language == "en"


def test_num_proc_and_chunk_docs_are_validated():
    with pytest.raises(ConfigError) as err:
        DataConfig(num_proc=0, chunk_docs=0)
    assert len(err.value.problems) == 2
    for bad in ("many", True, 1.5):
        with pytest.raises(ConfigError, match="num_proc must be 'auto' or an integer >= 1"):
            DataConfig(num_proc=bad)
    assert DataConfig(num_proc=2).num_proc == 2 and DataConfig().num_proc == "auto"
