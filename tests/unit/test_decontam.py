import json
import unicodedata

import pytest

from cptnb.data.decontam import DecontamConfig, build_contamination_index, decontaminate
from cptnb.data.documents import Document, DropCounter
from cptnb.errors import ConfigError, DataError
from cptnb.paths import data_samples_dir

# 19 words: long enough to have 13-grams.
QUESTION = "Theo sách giáo khoa, con sông nào dài nhất chảy qua lãnh thổ Việt Nam từ bắc xuống nam?"
PASSAGE = (
    "Chiều nào ông Tư cũng ngồi dưới gốc phi lao đầu xóm để vá lưới. Đôi tay ông gầy guộc "
    "nhưng thoăn thoắt, con thoi tre luồn qua từng mắt lưới như có mắt."
)
SHORT_QUESTION = "Thủ đô của nước Pháp là thành phố nào?"  # 9 words: matched inside documents
TINY_QUESTION = "Ai viết Truyện Kiều?"  # 4 words: only a document that is exactly this
LAMBADA = (
    "Sáng nào bà Tư cũng dắt con chó đen tên Mực ra bờ sông đi dạo. Người trong xóm quen đến mức "
    "chỉ cần nghe tiếng sủa là biết bà sắp đi ngang qua."
)
FILLER = "xin chào các bạn hôm nay mình kể một chuyện vui ở quê nhà"


def _words(text, start, count):
    return " ".join(text.replace(",", "").replace("?", "").split()[start : start + count])


@pytest.fixture()
def tasks(tmp_path):
    exams = tmp_path / "exams_vi" / "test.jsonl"
    exams.parent.mkdir()
    items = [
        {"id": "q1", "question": QUESTION, "choices": {"label": ["A", "B"], "text": ["Sông Hồng", "Sông Mê Công"]},
         "answerKey": "B"},
        {"id": "q2", "question": SHORT_QUESTION, "choices": {"label": ["A", "B"], "text": ["Paris", "Lyon"]}},
        {"id": "q3", "question": TINY_QUESTION, "choices": {"label": ["A"], "text": ["Nguyễn Du"]}},
        {"id": "c1", "passage": PASSAGE, "question": "Ông Tư làm gì?",
         "choices": {"label": ["A"], "text": ["Vá lưới"]}},
    ]
    exams.write_text("\n".join(json.dumps(i, ensure_ascii=False) for i in items) + "\n\n", encoding="utf-8")
    lambada = tmp_path / "lambada_vi.jsonl"
    lambada.write_text(json.dumps({"id": "l1", "text": LAMBADA}, ensure_ascii=False) + "\n", encoding="utf-8")
    return exams, lambada


def _run(docs, index, batch_docs=256):
    drops = DropCounter()
    kept = list(decontaminate(docs, index, drops, batch_docs=batch_docs))
    return [d.id for d in kept], drops


def test_a_13_gram_of_a_question_contaminates_12_words_do_not(tasks):
    index = build_contamination_index(tasks)
    docs = [
        Document(f"{FILLER} {_words(QUESTION, 2, 13)} {FILLER}", "web", id="13"),
        Document(f"{FILLER} {_words(QUESTION, 2, 12)} {FILLER}", "web", id="12"),
        Document(f"{FILLER} {_words(QUESTION, 0, 12)} và {_words(QUESTION, 12, 4)}", "web", id="12+gap"),
    ]
    kept, drops = _run(docs, index)
    assert kept == ["12", "12+gap"]
    assert drops.by_reason() == {"contaminated": 1}
    assert index.hits == {str(tasks[0]): 1}


def test_passage_and_lambada_text_match_after_normalization(tasks):
    index = build_contamination_index(tasks)
    passage_run = _words(PASSAGE, 5, 14)
    noisy = unicodedata.normalize("NFD", passage_run.upper()).replace(" ", " ,  ", 3)
    docs = [
        Document(f"Tin vắn: {noisy}!", "web", id="passage"),
        Document(f"{FILLER}. {_words(LAMBADA, 10, 13)}", "forum", id="lambada"),
        Document(FILLER, "forum", id="clean"),
    ]
    kept, drops = _run(docs, index)
    assert kept == ["clean"]
    assert drops.by_reason("web") == {"contaminated": 1} and drops.by_reason("forum") == {"contaminated": 1}
    assert index.hits == {str(tasks[0]): 1, str(tasks[1]): 1}


def test_short_texts_count_without_flagging_common_phrases(tasks):
    index = build_contamination_index(tasks)
    docs = [
        Document(f"Câu đố vui: {SHORT_QUESTION} Mời bạn trả lời.", "web", id="short-question-inside"),
        Document("Nguyễn Du", "web", id="choice-alone"),
        Document("Đại thi hào Nguyễn Du sinh năm 1765 ở Hà Tĩnh.", "web", id="choice-inside"),
        Document(f"{TINY_QUESTION} Đó là câu hỏi hay.", "web", id="tiny-question-inside"),
        Document(TINY_QUESTION.lower(), "web", id="tiny-question-alone"),
    ]
    kept, _ = _run(docs, index)
    assert kept == ["choice-inside", "tiny-question-inside"]


@pytest.mark.parametrize("batch_docs", [1, 256])
def test_grams_never_span_two_documents(tasks, batch_docs):
    index = build_contamination_index(tasks)
    docs = [
        Document(f"{FILLER} {_words(QUESTION, 0, 6)}", "web", id="ends-with-start"),
        Document(f"{_words(QUESTION, 6, 7)} {FILLER}", "web", id="starts-with-rest"),
        Document(f"{FILLER} {_words(QUESTION, 0, 13)}", "web", id="whole"),
        Document(FILLER, "web", id="after"),
    ]
    kept, drops = _run(docs, index, batch_docs)
    assert kept == ["ends-with-start", "starts-with-rest", "after"]  # order kept, only the real one dropped
    assert len(docs) == len(kept) + drops.total


def test_index_counts_items_and_reads_folders(tasks, tmp_path):
    index = build_contamination_index([tmp_path])
    assert index.items == 5 and len(index.files) == 2
    assert len(build_contamination_index(tasks, ngram_words=20)) < len(index)  # longer grams, fewer of them


def test_bundled_sample_corpora_are_not_contaminated_by_the_bundled_tasks():
    samples = data_samples_dir()
    index = build_contamination_index([samples / "eval"])
    assert index.items > 100
    docs = []
    for path in sorted((samples / "vi").glob("*.jsonl")):
        with open(path, encoding="utf-8") as fh:
            docs += [Document(json.loads(line)["text"], str(path)) for line in fh if line.strip()]
    kept, drops = _run(docs, index)
    assert len(kept) == len(docs) > 50 and drops.total == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"question": "Hai c\xe1\xba\xa3u?", ', "not valid JSON"),
        (b'["question", "text"]', "expected one JSON object per line, got list"),
        (b'{"id": "x", "answerKey": "A"}', "neither 'question'"),
        (b'{"question": "Hai?", "choices": ["A", "B"]}', "field 'choices' is malformed"),
        (b'{"question": "Hai?", "choices": {"label": ["A"], "text": [3]}}', "non-string choice 3"),
        (b'{"question": 42}', "field 'question' must be a string"),
        (b'{"text": "caf\xe9"}', "not valid UTF-8"),
    ],
)
def test_malformed_task_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"id": "ok", "text": LAMBADA}, ensure_ascii=False).encode()
    path.write_bytes(good + b"\n\n" + line + b"\n" + good + b"\n")
    with pytest.raises(DataError, match=message) as err:
        build_contamination_index([path])
    assert f"{path}:3:" in str(err.value)


def test_missing_task_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="evaluation task file not found"):
        build_contamination_index([tmp_path / "nope.jsonl"])


def test_config_lists_every_problem():
    assert DecontamConfig().ngram_words == 13 and DecontamConfig().enabled
    with pytest.raises(ConfigError) as err:
        DecontamConfig(ngram_words=0, enabled="no")
    assert len(err.value.problems) == 2
    with pytest.raises(ConfigError, match="short_text_min_words"):
        DecontamConfig(ngram_words=5, short_text_min_words=8)
    with pytest.raises(ConfigError, match="unknown field 'ngrams'"):
        DecontamConfig.from_dict({"ngrams": 13})
    assert all(DecontamConfig.help().values())
