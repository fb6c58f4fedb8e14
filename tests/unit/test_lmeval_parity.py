"""cptnb's scores equal lm-evaluation-harness's on the exported task YAMLs (same items, model and machine)."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml

from cptnb.evaluate.lmeval_export import export_lm_eval_tasks
from cptnb.evaluate.scoring import TaskResult, evaluate_task
from cptnb.evaluate.tasks import load_tasks
from cptnb.paths import REPO_ROOT

EVAL = REPO_ROOT / "data_samples" / "eval"
VILLM = REPO_ROOT / "tests" / "fixtures" / "villm_eval"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPU is shared; one thread per process is faster and steadier here
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lm_eval():
    try:
        import lm_eval
    except ImportError:  # a parity test that skips would let CI pass without ever comparing
        pytest.fail("lm-eval is a test dependency (in the CPU stack): pip install lm-eval==0.4.13 (requirements-cpu.txt)")
    return lm_eval


def _lm_eval(model, tokenizer, out_dir: Path, names: list[str], limit: int | None) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    harness = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8)
    # include_defaults=False: indexing lm-eval's ~14,000 built-in task files would take longer than the scoring.
    manager = TaskManager(include_path=str(out_dir), include_defaults=False)
    return simple_evaluate(model=harness, tasks=names, task_manager=manager, log_samples=True, limit=limit,
                           fewshot_random_seed=1234)


def _assert_same(ours: dict[str, TaskResult], theirs: dict) -> int:
    """Per item: same choice picked (acc, acc_norm, acc_bytes) and log-likelihoods within 1e-4; same aggregates."""
    compared = 0
    for name, result in ours.items():
        subtasks = [f"{name}_{s}" for s in result.subjects] if result.subjects else [name]
        samples = [s for sub in subtasks for s in sorted(theirs["samples"][sub], key=lambda s: s["doc_id"])]
        assert len(samples) == result.n == len(result.items)
        for sample, item in zip(samples, result.items):
            assert "id" in sample["doc"], (name, "lm-eval's document has no id to pair it with ours")
            assert str(sample["doc"]["id"]) == item["id"]
            lls = [resp[0] for resp in sample["filtered_resps"]]
            mine = item["loglikelihoods"] if "loglikelihoods" in item else [item["loglikelihood"]]
            assert mine == pytest.approx(lls, abs=1e-4), (name, item["id"])
            for metric in ("acc", "acc_norm", "acc_bytes"):
                if metric in item:
                    assert item[metric] == int(sample[metric]), (name, item["id"], metric)
            compared += 1
        agg = theirs["results"][name if name in theirs["results"] else subtasks[0]]
        for metric, value in result.metrics.items():
            if metric == "perplexity":
                assert value == pytest.approx(agg["perplexity,none"], rel=1e-4)
                continue
            assert value == pytest.approx(agg[f"{metric},none"], abs=1e-12), (name, metric)
            assert result.stderr[metric] == pytest.approx(agg[f"{metric}_stderr,none"], abs=1e-12), (name, metric)
    return compared


def test_the_parity_check_pairs_items_by_id_and_fails_without_one():
    ours = {"t": TaskResult(name="t", kind="lambada", role="domain", num_fewshot=0, n=1, metrics={}, stderr={},
                            items=[{"id": "t-001", "loglikelihood": -1.0}])}

    def theirs(doc):
        return {"samples": {"t": [{"doc_id": 0, "doc": doc, "filtered_resps": [(-1.0, False)]}]}, "results": {"t": {}}}

    assert _assert_same(ours, theirs({"id": "t-001"})) == 1
    with pytest.raises(AssertionError):
        _assert_same(ours, theirs({"id": "t-002"}))
    with pytest.raises(AssertionError, match="no id"):
        _assert_same(ours, theirs({"text": "an item without an id"}))


# Written by hand in lm-eval's own conventions (its ARC / lambada_openai task files): only what a harness user would
# write, with lm-eval's default target and few-shot delimiters, so nothing here comes from cptnb's exporter.
HAND_WRITTEN = {
    "general_en": """
task: general_en
dataset_path: json
dataset_kwargs:
  data_files:
    test: FOLDER/test.jsonl
    dev: FOLDER/dev.jsonl
test_split: test
fewshot_split: dev
num_fewshot: 5
output_type: multiple_choice
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_target: "{{choices.label.index(answerKey)}}"
doc_to_choice: "{{choices.text}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
  - metric: acc_bytes
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
""",
    "lambada_vi": """
task: lambada_vi
dataset_path: json
dataset_kwargs:
  data_files:
    test: FOLDER/test.jsonl
test_split: test
output_type: loglikelihood
doc_to_text: "{{text.split(' ')[:-1]|join(' ')}}"
doc_to_target: "{{' '+text.split(' ')[-1]}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
""",
}


@pytest.mark.slow
def test_hand_written_lm_eval_tasks_score_as_the_kit(lm_eval, tiny, tmp_path):
    loaded = tiny(method="lora")
    for name, text in HAND_WRITTEN.items():
        (tmp_path / f"{name}.yaml").write_text(text.replace("FOLDER", str((EVAL / name).resolve())), encoding="utf-8")
    theirs = _lm_eval(loaded.model, loaded.tokenizer, tmp_path, list(HAND_WRITTEN), limit=None)
    tasks = {t.name: t for t in load_tasks(EVAL) if t.name in HAND_WRITTEN}
    ours = {name: evaluate_task(loaded.model, loaded.tokenizer, task, batch_size=8) for name, task in tasks.items()}
    assert _assert_same(ours, theirs) == 60 + 110


def test_export_writes_yamls_over_the_same_files(tmp_path):
    written = export_lm_eval_tasks(EVAL, tmp_path)
    names = sorted(p.name for p in written)
    subjects = ["dia", "hoa", "su", "sinh", "toan", "van", "vatly"]
    assert names == sorted(["comprehension_vi.yaml", "general_en.yaml", "lambada_vi.yaml", "wikipediaqa_vi.yaml",
                            "exams_vi_group.yaml", "utils.py"] + [f"exams_vi_{s}.yaml" for s in subjects])

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: "!function " + loader.construct_scalar(node))
    load = lambda name: yaml.load((tmp_path / name).read_text(encoding="utf-8"), Loader=Loader)
    wiki = load("wikipediaqa_vi.yaml")
    assert wiki["dataset_kwargs"]["data_files"] == {"test": str((EVAL / "wikipediaqa_vi" / "test.jsonl").resolve()),
                                                    "dev": str((EVAL / "wikipediaqa_vi" / "dev.jsonl").resolve())}
    assert (wiki["num_fewshot"], wiki["fewshot_split"], wiki["doc_to_text"]) == (5, "dev", "Câu hỏi: {{question}}\nTrả lời:")
    assert load("lambada_vi.yaml")["output_type"] == "loglikelihood" and load("comprehension_vi.yaml")["num_fewshot"] == 0
    group = load("exams_vi_group.yaml")
    assert group["group"] == "exams_vi" and group["task"] == [f"exams_vi_{s}" for s in subjects]
    assert load("exams_vi_dia.yaml")["process_docs"] == "!function utils.keep_exams_vi_dia"
    assert "def keep_exams_vi_vatly(dataset):" in (tmp_path / "utils.py").read_text(encoding="utf-8")


def test_original_schema_tasks_are_exported_as_normalised_copies(tmp_path):
    written = export_lm_eval_tasks(VILLM, tmp_path)
    copy = tmp_path / "data" / "wikipediaqa_vi" / "test.jsonl"
    assert copy in written and (tmp_path / "data" / "wikipediaqa_vi" / "dev.jsonl") in written
    first = json.loads(copy.read_text(encoding="utf-8").splitlines()[0])
    assert first["choices"]["label"] == ["A", "B", "C", "D"] and first["id"] == "wikipediaqa_vi-test-00000"
    assert (tmp_path / "data" / "comprehension_vi").exists() is False  # already in the kit's schema: read in place


@pytest.mark.slow
def test_tiny_llama_all_sample_items_score_as_lm_eval(lm_eval, tiny, tmp_path):
    loaded = tiny(method="lora")
    tasks = load_tasks(EVAL)
    export_lm_eval_tasks(tasks, tmp_path)
    theirs = _lm_eval(loaded.model, loaded.tokenizer, tmp_path, [t.name for t in tasks], limit=None)
    ours = {t.name: evaluate_task(loaded.model, loaded.tokenizer, t, batch_size=8) for t in tasks}
    assert _assert_same(ours, theirs) == 110 + 154 + 36 + 60 + 110


@pytest.mark.slow
def test_original_villm_eval_files_score_as_lm_eval(lm_eval, tiny, tmp_path):
    loaded = tiny(method="full")
    tasks = load_tasks(VILLM)
    export_lm_eval_tasks(tasks, tmp_path)
    theirs = _lm_eval(loaded.model, loaded.tokenizer, tmp_path, [t.name for t in tasks], limit=None)
    ours = {t.name: evaluate_task(loaded.model, loaded.tokenizer, t) for t in tasks}
    assert _assert_same(ours, theirs) == 3 + 4 + 4 + 2


@pytest.mark.slow
def test_smollm2_subset_scores_as_lm_eval(lm_eval, tmp_path):
    from cptnb.config import ModelConfig
    from cptnb.models.loading import load_model

    loaded = load_model(ModelConfig(name="smollm2-135m", method="lora"))
    tasks = {t.name: t for t in load_tasks(EVAL)}
    # One exams subject (its own sub-task in lm-eval) keeps the real-model run short; tiny-llama covers every item.
    chosen = [tasks["wikipediaqa_vi"], dataclasses.replace(tasks["exams_vi"], subjects=["dia"]), tasks["general_en"],
              tasks["lambada_vi"]]
    export_lm_eval_tasks(chosen, tmp_path)
    theirs = _lm_eval(loaded.model, loaded.tokenizer, tmp_path, ["wikipediaqa_vi", "exams_vi_dia", "general_en", "lambada_vi"], limit=2)
    ours = {t.name: evaluate_task(loaded.model, loaded.tokenizer, t, limit=2) for t in chosen}
    assert _assert_same(ours, theirs) == 8
