"""prepare() end to end on the shipped samples plus planted problems."""

import json

import pytest

from cptnb.config import DataConfig
from cptnb.data.pipeline import prepare
from cptnb.paths import data_samples_dir

ROOT = data_samples_dir()
# An original paragraph (not a near duplicate of anything) that then quotes an evaluation question.
CONTAMINATED_INTRO = (
    "Trong buổi ôn tập cuối tuần, cô giáo chủ nhiệm chép lên bảng một loạt câu hỏi trắc nghiệm để cả lớp "
    "cùng thảo luận. Các bạn chia thành từng nhóm nhỏ, tranh luận sôi nổi rồi cử đại diện lên trình bày đáp án. "
    "Không khí trong phòng học rất vui vẻ, ai cũng muốn góp ý kiến của mình. Có bạn mang theo sách giáo khoa "
    "để tra cứu, có bạn lại ghi chép cẩn thận vào vở những điều mới học được. Đến giữa buổi, cô cho cả lớp nghỉ "
    "giải lao mười phút rồi quay lại với phần khó hơn. Câu hỏi đầu tiên khiến nhiều người phải suy nghĩ khá lâu:"
)


def result_config(planted) -> dict:
    """The DataConfig fields of the shared run (the default num_proc keeps these small inputs in one process)."""
    return {
        "sources": [str(ROOT / "vi"), str(planted)],
        "replay_sources": [str(ROOT / "en")],
        "replay_share": 0.1,
        "heldout_share": 0.1,
        "eval_tasks": [str(ROOT / "eval")],
        "on_error": "skip",
    }


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny):
    tmp = tmp_path_factory.mktemp("prep")
    vi = [json.loads(line) for line in (ROOT / "vi" / "news.jsonl").read_text(encoding="utf-8").splitlines()]
    question = json.loads((ROOT / "eval" / "wikipediaqa_vi" / "test.jsonl").read_text(encoding="utf-8").splitlines()[0])
    planted = tmp / "planted.jsonl"
    lines = [
        json.dumps({"text": vi[0]["text"]}, ensure_ascii=False),  # exact duplicate of a news document
        json.dumps({"text": vi[1]["text"].replace("\n\n", "\n\n\n")}, ensure_ascii=False),  # same after cleaning
        '{"text": "broken',  # broken JSON line
        json.dumps({"text": CONTAMINATED_INTRO + " " + question["question"]}, ensure_ascii=False),
        json.dumps({"text": "ok"}),  # too short
    ]
    planted.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = DataConfig(**result_config(planted))
    tokenizer = tiny(method="full").tokenizer
    return prepare(cfg, tokenizer, tmp / "out", block_tokens=128), tmp / "out", planted


def test_every_output_is_written(prepared):
    _, out, _ = prepared
    for name in ("report.json", "funnel.png", "fertility.json", "heldout_domain.jsonl", "heldout_general.jsonl"):
        assert (out / name).is_file(), name
    assert (out / "train" / "dataset_info.json").is_file()


def test_accounting_holds_per_source_and_in_total(prepared):
    result, _, planted = prepared
    report = result.report
    for source, entry in list(report["sources"].items()) + [("total", report["total"])]:
        assert entry["docs_in"] == entry["docs_kept"] + sum(entry["dropped"].values()), source
    planted_entry = report["sources"][str(planted)]
    assert planted_entry["docs_in"] == 5
    assert planted_entry["dropped"].get("broken_json") == 1
    assert planted_entry["dropped"].get("too_short") == 1
    assert planted_entry["dropped"].get("exact_duplicate") == 2
    assert planted_entry["dropped"].get("contaminated") == 1
    assert report["dedup"]["domain"]["exact_duplicates"] == 2 and report["dedup"]["domain"]["exact_clusters"] == 2
    assert sum(report["decontamination"]["files_hit"].values()) == 1


def test_tokens_replay_and_fertility(prepared):
    result, _, _ = prepared
    tokens = result.report["tokens"]
    assert tokens["tokens_in"] == tokens["tokens_packed"] + tokens["remainder_tokens"]
    assert abs(tokens["replay_share_achieved"] - 0.1) < 0.02
    fertility = result.report["fertility"]
    assert fertility["domain"]["tokens_per_word"] > 0 and fertility["replay"]["tokens_per_word"] > 0
    assert len(result.packed.dataset) == tokens["tokens_packed"] // 128


def test_heldout_documents_never_reach_training(prepared):
    result, out, _ = prepared
    assert result.report["heldout"]["domain_docs"] > 0 and result.report["heldout"]["general_docs"] > 0
    held = [json.loads(line)["text"] for line in (out / "heldout_domain.jsonl").read_text(encoding="utf-8").splitlines()]
    counts = result.report["heldout"]
    # The split-off documents plus the explicit held-out file (data_samples/heldout/vi_heldout.jsonl, 24 docs).
    assert counts["domain_file_docs"] == 24
    assert len(held) == len(result.heldout_domain) == counts["domain_docs"] + counts["domain_file_docs"]
    # Kept = trained + held out by the split: packing saw exactly the other kept documents.
    kept = result.report["total"]["docs_kept"]
    assert kept == result.packed.num_docs + counts["domain_docs"] + counts["general_docs"]


def test_source_files_cite_every_input_with_its_hash_and_role(prepared):
    import hashlib

    result, _, planted = prepared
    from pathlib import Path

    files = result.report["source_files"]
    # Paths as the recipe gave them (the default held-out files are relative to the working directory).
    by_path = {Path(entry["path"]).resolve(): entry for entry in files}
    assert len(by_path) == len(files)  # each file once
    roles = {entry["role"] for entry in files}
    assert roles == {"domain", "replay", "heldout_domain", "heldout_general", "eval_tasks"}
    assert by_path[planted.resolve()]["role"] == "domain"
    assert by_path[(ROOT / "en" / "general.jsonl").resolve()]["role"] == "replay"
    assert by_path[(ROOT / "heldout" / "vi_heldout.jsonl").resolve()]["role"] == "heldout_domain"
    eval_files = sorted(p.resolve() for p in (ROOT / "eval").rglob("*.jsonl"))
    assert sorted(Path(e["path"]).resolve() for e in files if e["role"] == "eval_tasks") == eval_files
    for entry in files:
        raw = Path(entry["path"]).read_bytes()
        assert entry["bytes"] == len(raw) and entry["sha256"] == hashlib.sha256(raw).hexdigest()


def test_workers_write_the_same_corpus_and_report(prepared, tiny, tmp_path):
    import dataclasses

    from cptnb.config import DataConfig

    result, out, planted = prepared
    cfg = DataConfig(**{**result_config(planted), "num_proc": 2, "chunk_docs": 16})
    again = prepare(cfg, tiny(method="full").tokenizer, tmp_path / "out2", block_tokens=128)
    assert again.report == result.report
    assert again.packed.dataset["input_ids"] == result.packed.dataset["input_ids"]
    assert dataclasses.replace(again.packed, dataset=None) == dataclasses.replace(result.packed, dataset=None)
    assert (tmp_path / "out2" / "heldout_domain.jsonl").read_text() == (out / "heldout_domain.jsonl").read_text()


def test_preparation_shows_progress_per_corpus(prepared, tiny, tmp_path, capsys):
    from cptnb.config import DataConfig

    _, _, planted = prepared
    capsys.readouterr()
    prepare(DataConfig(**result_config(planted)), tiny(method="full").tokenizer, tmp_path / "out3", block_tokens=128)
    bars = capsys.readouterr().err
    # One bar per corpus (domain and replay), advancing as the stages pull documents through.
    assert "preparing vi documents" in bars and "preparing en documents" in bars
    assert " docs" in bars.split("preparing vi documents", 1)[1]
