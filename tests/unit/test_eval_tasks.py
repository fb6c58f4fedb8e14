"""Task loading, validation, few-shot draws and prompts (cptnb.evaluate.tasks); no model needed."""

import json
import random
import shutil
from pathlib import Path

import pytest

from cptnb.config import EvalConfig
from cptnb.errors import ConfigError, DataError
from cptnb.evaluate.tasks import (
    EXAMS_SUBJECTS,
    context,
    continuations,
    fewshot_plan,
    load_task,
    load_tasks,
    subject_slug,
    subtasks,
)
from cptnb.paths import REPO_ROOT

EVAL = REPO_ROOT / "data_samples" / "eval"
VILLM = REPO_ROOT / "tests" / "fixtures" / "villm_eval"


def _mc(i, **over):
    item = {"id": f"q{i}", "question": f"Câu hỏi số {i}?", "choices": {"label": ["A", "B", "C"], "text": ["một", "hai", "ba"]},
            "answerKey": "B", "metadata": {"subject": "dia"}}
    item.update(over)
    return item


def _task_dir(tmp_path: Path, test_lines: list, dev_lines: list | None = None, spec: str | None = None, name="demo") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    as_line = lambda x: x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)
    (folder / "test.jsonl").write_text("\n".join(as_line(x) for x in test_lines) + "\n", encoding="utf-8")
    if dev_lines is not None:
        (folder / "dev.jsonl").write_text("\n".join(as_line(x) for x in dev_lines) + "\n", encoding="utf-8")
    if spec is not None:
        (folder / "task.yaml").write_text(spec, encoding="utf-8")
    return folder


def test_sample_tasks_load_with_design_defaults():
    tasks = {t.name: t for t in load_tasks(EVAL)}
    assert sorted(tasks) == ["comprehension_vi", "exams_vi", "general_en", "lambada_vi", "wikipediaqa_vi"]
    shape = {n: (t.kind, t.role, t.num_fewshot, len(t.items), len(t.fewshot_pool)) for n, t in tasks.items()}
    assert shape == {
        "lambada_vi": ("lambada", "domain", 0, 110, 0),
        "wikipediaqa_vi": ("multiple_choice", "domain", 5, 110, 15),
        "exams_vi": ("multiple_choice", "domain", 5, 154, 42),
        "comprehension_vi": ("multiple_choice", "domain", 0, 36, 0),
        "general_en": ("multiple_choice", "general", 5, 60, 10),
    }
    exams = tasks["exams_vi"]
    assert exams.split_by_subject and exams.subjects == list(EXAMS_SUBJECTS)
    assert {s: len(v) for s, v in subtasks(exams).items()} == {s: 22 for s in EXAMS_SUBJECTS}
    assert tasks["general_en"].language == "en" and "Question:" in tasks["general_en"].template
    assert all(t.schema == "cptnb" for t in tasks.values())
    # One task folder alone loads too, and EvalConfig-style overrides apply.
    (one,) = load_tasks(EVAL / "wikipediaqa_vi", num_fewshot=2, fewshot_seed=7)
    assert (one.name, one.num_fewshot, one.fewshot_seed) == ("wikipediaqa_vi", 2, 7)


def test_lambada_items_split_at_the_last_space():
    (task,) = load_tasks(EVAL / "lambada_vi")
    first = json.loads((EVAL / "lambada_vi" / "test.jsonl").read_text(encoding="utf-8").splitlines()[0])
    item = task.items[0]
    assert item["context"] + item["target"] == first["text"]
    assert item["target"] == " " + first["text"].split(" ")[-1] and " " not in item["target"][1:]
    assert context(task, item, []) == item["context"] and continuations(task, item) == [item["target"]]


BAD_ITEMS = [
    ('{"id": "x", "question": "Q?", "choices": ', "not valid JSON"),
    ({"id": "x", "choices": {"label": ["A", "B"], "text": ["a", "b"]}, "answerKey": "A"}, "'question'"),
    ({"id": "x", "question": "Q?", "answerKey": "A"}, "'choices'"),
    ({"id": "x", "question": "Q?", "choices": {"label": ["A", "B"], "text": ["a", "b"]}}, "'answerKey'"),
    ({"id": "x", "question": "Q?", "choices": {"label": ["A", "B"], "text": ["a", "b"]}, "answerKey": "E"}, "'answerKey' is 'E'"),
    ({"id": "x", "question": "Q?", "choices": {"label": ["A"], "text": ["a"]}, "answerKey": "A"}, "at least 2"),
    ({"id": "x", "question": "Q?", "choices": {"label": ["A", "B"], "text": ["a"]}, "answerKey": "A"}, "2 labels but 1 texts"),
    ({"id": "x", "question": "Q?", "choices": ["a", "b"], "answerKey": "A"}, "'choices' is malformed"),
    ({"id": "x", "question": "Q?", "choices": {"label": ["A", "B"], "text": ["a", ""]}, "answerKey": "A"}, "'choices.text'"),
    ({"id": "q0", "question": "Q?", "choices": {"label": ["A", "B"], "text": ["a", "b"]}, "answerKey": "A"}, "already used"),
    ("[1, 2]", "expected a JSON object"),
]


@pytest.mark.parametrize("bad,expected", BAD_ITEMS)
def test_malformed_multiple_choice_item_names_file_line_and_field(tmp_path, bad, expected):
    folder = _task_dir(tmp_path, [_mc(0), bad, _mc(2)], spec="kind: multiple_choice\n")
    with pytest.raises(DataError) as err:
        load_task(folder)
    message = str(err.value)
    assert f"{folder / 'test.jsonl'}:2:" in message and expected in message


@pytest.mark.parametrize("text", ["Một câu kết thúc bằng dấu cách ", "Mộtchữ", " lẻloi", "Dòng cuối\n", ""])
def test_lambada_text_without_a_last_word_is_rejected(tmp_path, text):
    good = {"id": "a", "text": "Trời hôm nay rất đẹp"}
    folder = _task_dir(tmp_path, [good, {"id": "b", "text": text}], spec="kind: lambada\n")
    with pytest.raises(DataError, match=r"test\.jsonl:2: field 'text' has no last word"):
        load_task(folder)


def test_lambada_missing_text_field(tmp_path):
    folder = _task_dir(tmp_path, [{"id": "a", "passage": "Không có trường text ở đây"}], spec="kind: lambada\n")
    with pytest.raises(DataError, match=r"test\.jsonl:1: missing field 'text'"):
        load_task(folder)


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("promt: qa_vi\n", "unknown field 'promt'"),
        ("prompt: cau_hoi\n", "prompt must be one of"),
        ("role: teacher\n", "role must be one of"),
        ("fewshot_split: test\n", "never the scored split"),
        ("num_fewshot: 4\n", "only 3 item(s)"),
        ("- just\n- a list\n", "top level must be a mapping"),
    ],
)
def test_bad_task_yaml_is_a_config_error(tmp_path, spec, expected):
    folder = _task_dir(tmp_path, [_mc(i) for i in range(3)], [_mc(10 + i) for i in range(3)], spec=spec)
    with pytest.raises(ConfigError) as err:
        load_task(folder)
    assert expected in str(err.value) and "task.yaml" in str(err.value)


def test_fewshot_without_dev_split_or_on_lambada_is_refused(tmp_path):
    no_dev = _task_dir(tmp_path, [_mc(0), _mc(1)], spec="num_fewshot: 1\n", name="nodev")
    with pytest.raises(ConfigError, match="has no dev split"):
        load_task(no_dev)
    lamb = _task_dir(tmp_path, [{"id": "a", "text": "Trời hôm nay rất đẹp"}], spec="kind: lambada\nnum_fewshot: 1\n", name="lamb")
    with pytest.raises(ConfigError, match="must be 0 for a lambada task"):
        load_task(lamb)


def test_dev_item_that_is_also_scored_is_refused(tmp_path):
    folder = _task_dir(tmp_path, [_mc(0), _mc(1)], [_mc(5), _mc(1, id="dev-copy")], spec="num_fewshot: 1\n")
    with pytest.raises(DataError, match="also a scored test item"):
        load_task(folder)


def test_fewshot_examples_come_from_dev_only_and_are_reproducible():
    (exams,) = load_tasks(EVAL / "exams_vi")
    plan = fewshot_plan(exams)
    assert len(plan) == 154
    scored = {i["id"] for i in exams.items}
    pool = {d["id"]: d for d in exams.fewshot_pool}
    for item, shots in plan:
        assert len(shots) == 5 and len({s["id"] for s in shots}) == 5
        assert all(s["id"] in pool and s["id"] not in scored for s in shots)
        assert all(s["metadata"]["subject"] == item["metadata"]["subject"] for s in shots)
    ids = lambda p: [[s["id"] for s in shots] for _, shots in p]
    assert ids(fewshot_plan(exams)) == ids(plan)  # same seed, same draw
    exams.fewshot_seed = 99
    assert ids(fewshot_plan(exams)) != ids(plan)
    # lm-eval's sampler is sequential per sub-task: a limit keeps the first draws of each subject unchanged.
    exams.fewshot_seed = 1234
    limited = fewshot_plan(exams, limit=3)
    assert len(limited) == 21 and [shots for _, shots in limited][:3] == [shots for _, shots in plan][:3]
    assert [i["id"] for i, _ in limited][3:6] == [i["id"] for i, _ in plan][22:25]


def test_fewshot_draw_is_one_seeded_sampler_per_subtask():
    (wiki,) = load_tasks(EVAL / "wikipediaqa_vi")
    rnd = random.Random(wiki.fewshot_seed)
    expected = [[d["id"] for d in rnd.sample(wiki.fewshot_pool, 5)] for _ in wiki.items]
    assert [[s["id"] for s in shots] for _, shots in fewshot_plan(wiki)] == expected


def test_prompt_is_description_then_examples_then_item(tmp_path):
    spec = 'num_fewshot: 2\ndescription: "Trắc nghiệm.\\n\\n"\ndoc_to_text: "Hỏi: {{question}}\\nĐáp:"\n'
    folder = _task_dir(tmp_path, [_mc(0)], [_mc(5, answerKey="A"), _mc(6, answerKey="C")], spec=spec)
    task = load_task(folder)
    item, shots = fewshot_plan(task)[0]
    answers = {"q5": "một", "q6": "ba"}
    expected = "Trắc nghiệm.\n\n" + "".join(
        f"Hỏi: {s['question']}\nĐáp: {answers[s['id']]}\n\n" for s in shots
    ) + "Hỏi: Câu hỏi số 0?\nĐáp:"
    assert context(task, item, shots) == expected
    assert continuations(task, item) == [" một", " hai", " ba"]


def test_template_needing_a_missing_field_names_the_item(tmp_path):
    folder = _task_dir(tmp_path, [_mc(0)], spec="prompt: passage_qa_vi\n")
    task = load_task(folder)
    with pytest.raises(DataError, match="item 'q0'.*passage"):
        context(task, task.items[0], [])


@pytest.mark.parametrize(
    "raw,slug",
    [("MÔN ĐỊA", "dia"), ("MÔN VẬT LÝ", "vatly"), ("Môn Lịch sử", "su"), ("MÔN NGỮ VĂN", "van"), ("MÔN HÓA", "hoa"),
     ("Sinh học", "sinh"), ("MÔN TOÁN", "toan"), ("MÔN LÝ", "vatly"), ("vatly", "vatly"), ("health", "health")],
)
def test_subject_names_become_slugs(raw, slug):
    assert subject_slug(raw) == slug


def test_original_villm_eval_files_load_in_their_own_schema():
    tasks = {t.name: t for t in load_tasks(VILLM)}
    assert sorted(tasks) == ["comprehension_vi", "exams_vi", "lambada_vi", "wikipediaqa_vi"]
    lam = tasks["lambada_vi"]
    assert lam.schema == "villm" and lam.items[0]["target"] == " Bát Tràng"  # a two-word target
    assert lam.items[0]["context"].endswith("làng gốm") and lam.items[0]["id"] == "lambada_vi-test-00000"
    wiki = tasks["wikipediaqa_vi"]
    assert wiki.items[0]["choices"]["label"] == ["A", "B", "C", "D"]  # "labels" on the hub
    assert [i["metadata"]["subject"] for i in wiki.items] == ["geography", "ai_la_trieu_phu", "health", "ai_la_trieu_phu"]
    assert wiki.num_fewshot == 2 and len(wiki.fewshot_pool) == 3
    exams = tasks["exams_vi"]
    assert exams.split_by_subject and exams.subjects == ["dia", "vatly"] and exams.num_fewshot == 0
    assert exams.items[0]["metadata"] == {"grade": "Lớp 12", "subject": "dia"}
    comp = tasks["comprehension_vi"]  # the hub's "comprehension" folder, passage inside the question
    assert comp.num_fewshot == 0 and comp.items[1]["answerKey"] == "C"
    assert context(comp, comp.items[0], []).startswith("Câu hỏi: Dựa vào thông tin sau")


def test_original_exams_without_dev_split_cannot_be_few_shot(tmp_path):
    folder = tmp_path / "exams_vi"
    shutil.copytree(VILLM / "exams_vi", folder)
    (folder / "task.yaml").unlink()  # exams_vi defaults to 5-shot
    with pytest.raises(ConfigError, match="no dev split"):
        load_task(folder)
    (task,) = load_tasks(folder, num_fewshot=0)
    assert len(task.items) == 4


def test_parquet_files_as_on_the_hub_load_like_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "exams_vi" / "data"
    folder.mkdir(parents=True)
    rows = [json.loads(line) for line in (VILLM / "exams_vi" / "test.jsonl").read_text(encoding="utf-8").splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), folder / "test-00000-of-00001.parquet")
    from_parquet = load_task(tmp_path / "exams_vi", num_fewshot=0)
    from_jsonl = load_task(VILLM / "exams_vi")
    assert from_parquet.items == from_jsonl.items and from_parquet.subjects == ["dia", "vatly"]
    (folder / "test-00000-of-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable parquet file"):
        load_task(tmp_path / "exams_vi", num_fewshot=0)


def test_empty_or_missing_task_folders_are_explained(tmp_path):
    with pytest.raises(ConfigError, match="not a folder"):
        load_tasks(tmp_path / "nope")
    with pytest.raises(DataError, match="no task folders"):
        load_tasks(tmp_path)


def test_eval_config_task_fields_validate():
    assert EvalConfig().tasks == ["data_samples/eval"] and EvalConfig().limit == 0
    with pytest.raises(ConfigError) as err:
        EvalConfig(limit=-1, num_fewshot=-2, fewshot_seed=-5, tasks="data_samples/eval")
    assert len(err.value.problems) == 4
