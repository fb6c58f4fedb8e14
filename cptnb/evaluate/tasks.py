"""Evaluation tasks (ViLLM-Eval style): load, validate, draw few-shot examples, build prompts.

A task is a folder holding ``test.jsonl`` (the scored items), an optional
``dev.jsonl`` (the only source of few-shot examples) and an optional
``task.yaml`` (:class:`TaskSpec`). Two item schemas are read:

* the kit's (``data_samples/eval``): multiple choice ``{"id", "question",
  "choices": {"label": [...], "text": [...]}, "answerKey", "passage"?,
  "metadata": {"subject"}}``; lambada ``{"id", "text"}`` whose last
  space-separated word is the target;
* the original ViLLM-Eval datasets (``vlsp-2023-vllm/*`` on the hub, saved as
  JSONL or parquet, ``validation`` as the dev split): ``choices.labels`` instead
  of ``choices.label`` (wikipediaqa_vi), ``metadata`` as a category string or
  ``{"grade", "subject": "MÔN ĐỊA"}`` (exams_vi), no ``id``; lambada_vi rows
  ``{"text", "context", "target_word", "metadata"}`` whose target may be several words.

Prompts follow lm-evaluation-harness: ``description`` + few-shot examples
(``prompt + " " + answer``, each followed by ``"\\n\\n"``) + the item's prompt;
each choice is scored as the continuation ``" " + choice``. Few-shot examples
are drawn exactly as lm-eval's default sampler draws them (see
:func:`fewshot_plan`), so the exported lm-eval YAMLs see the same prompts.

Example::

    tasks = load_tasks("data_samples/eval")
    [(t.name, t.kind, len(t.items)) for t in tasks]
"""

from __future__ import annotations

import functools
import random
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cptnb.configbase import Section, choice, option, positive
from cptnb.data.sources import read_records
from cptnb.errors import ConfigError, DataError

KINDS = ("multiple_choice", "lambada")
ROLES = ("domain", "general")
LM_EVAL_DEFAULT_FEWSHOT_SEED = 1234  # lm_eval.simple_evaluate(fewshot_random_seed=...) default
TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"

# Jinja templates (rendered like lm-eval renders doc_to_text), chosen by name in task.yaml.
PROMPTS = {
    "qa_vi": "Câu hỏi: {{question}}\nTrả lời:",
    "passage_qa_vi": "Đoạn văn: {{passage}}\nCâu hỏi: {{question}}\nTrả lời:",
    "qa_en": "Question: {{question}}\nAnswer:",
    "passage_qa_en": "Passage: {{passage}}\nQuestion: {{question}}\nAnswer:",
    "question": "{{question}}",
}

# Defaults per DESIGN.md when a task folder has no task.yaml (or leaves a field out).
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "lambada_vi": {"kind": "lambada", "num_fewshot": 0},
    "wikipediaqa_vi": {"kind": "multiple_choice", "num_fewshot": 5, "prompt": "qa_vi"},
    "exams_vi": {"kind": "multiple_choice", "num_fewshot": 5, "prompt": "qa_vi", "split_by_subject": True},
    "comprehension_vi": {"kind": "multiple_choice", "num_fewshot": 0, "prompt": "passage_qa_vi"},
    "comprehension": {"kind": "multiple_choice", "num_fewshot": 0, "prompt": "qa_vi", "name": "comprehension_vi"},
    "general_en": {"kind": "multiple_choice", "num_fewshot": 5, "prompt": "qa_en", "role": "general", "language": "en"},
}

# exams_vi subjects: the kit's slugs, and the words that name them in the original "MÔN ĐỊA"-style labels.
EXAMS_SUBJECTS = ("dia", "hoa", "su", "sinh", "toan", "van", "vatly")
_SUBJECT_WORDS = [("dia", "dia"), ("hoa", "hoa"), ("su", "su"), ("sinh", "sinh"), ("toan", "toan"),
                  ("van", "van"), ("vat", "vatly"), ("ly", "vatly"), ("li", "vatly")]

TEST_FILES = ("test.jsonl", "test.json", "test.parquet", "test-*.parquet", "data/test-*.parquet", "data/test-*.jsonl")
DEV_FILES = ("dev.jsonl", "dev.json", "dev.parquet", "validation.jsonl", "validation.json", "validation.parquet",
             "validation-*.parquet", "data/validation-*.parquet", "data/validation-*.jsonl")


@dataclass
class TaskSpec(Section):
    """The contents of a task folder's ``task.yaml``; every field is optional."""

    name: str = option("", "Task name in results; empty means the folder name.")
    kind: str = option("", "multiple_choice or lambada; empty means the default for the name, else inferred from the items.")
    role: str = option("", "domain (the language/domain being learned) or general (retention of general ability); empty means the default for the name, else domain.")
    language: str = option("", "Language of the items (vi, en, ...), for reports; empty means the default for the name, else vi.")
    num_fewshot: int = option(-1, "Few-shot examples per item, drawn from the dev split; -1 means the default for the name (else 0).")
    fewshot_seed: int = option(LM_EVAL_DEFAULT_FEWSHOT_SEED, "Seed of the few-shot draw; 1234 is lm-eval's default fewshot_random_seed.")
    fewshot_split: str = option("dev", "Split the few-shot examples come from: dev (dev.jsonl, or validation* as on the hub); never the scored split.")
    prompt: str = option("", f"Named prompt template: {', '.join(PROMPTS)}; empty means the default for the name, else qa_vi.")
    doc_to_text: str = option("", "Custom Jinja prompt template over the item's fields (overrides prompt), e.g. 'Hỏi: {{question}}\\nĐáp:'.")
    description: str = option("", "Text put before the few-shot examples (lm-eval's description), e.g. an instruction and a blank line.")
    split_by_subject: bool = option(False, "Score each metadata.subject as its own sub-task (few-shot drawn within the subject), as exams_vi.")
    subjects: list = option([], "Subjects in report order (split_by_subject); empty means the order they first appear.")
    test_file: str = option("", "Scored items, relative to the task folder; empty means test.jsonl / test*.parquet.")
    dev_file: str = option("", "Few-shot pool, relative to the task folder; empty means dev.jsonl / validation*.")

    def problems(self) -> list[str]:
        p: list[str] = []
        if self.kind:
            choice(p, "kind", self.kind, KINDS)
        if self.role:
            choice(p, "role", self.role, ROLES)
        if not isinstance(self.num_fewshot, int) or self.num_fewshot < -1:
            p.append(f"num_fewshot must be >= 0 (or -1 for the default), got {self.num_fewshot!r}")
        positive(p, "fewshot_seed", self.fewshot_seed, allow_zero=True)
        if self.fewshot_split not in ("dev", "validation"):
            p.append(f"fewshot_split must be dev (or its hub name, validation), never the scored split; got {self.fewshot_split!r}")
        if self.prompt and self.prompt not in PROMPTS:
            p.append(f"prompt must be one of {', '.join(PROMPTS)} (or write doc_to_text); got {self.prompt!r}")
        if not isinstance(self.subjects, list):
            p.append(f"subjects must be a list of subject names, got {self.subjects!r}")
        return p


@dataclass
class Task:
    """A loaded task: validated items, the few-shot pool, and how to prompt them.

    ``items`` and ``fewshot_pool`` are dicts in the canonical schema
    (``id``, ``question``, ``choices``, ``answerKey``, ``metadata.subject``,
    optional ``passage``; lambada: ``id``, ``context``, ``target``).
    """

    name: str
    kind: str
    role: str
    num_fewshot: int
    items: list[dict]
    fewshot_pool: list[dict] = field(default_factory=list)
    path: Path = Path(".")
    language: str = "vi"
    template: str = PROMPTS["qa_vi"]
    description: str = ""
    fewshot_seed: int = LM_EVAL_DEFAULT_FEWSHOT_SEED
    split_by_subject: bool = False
    subjects: list[str] = field(default_factory=list)
    schema: str = "cptnb"  # "cptnb" (this kit's files) or "villm" (the original datasets' rows, normalised)
    test_file: Path | None = None
    dev_file: Path | None = None


# ---------------------------------------------------------------- normalising rows


def subject_slug(value: Any) -> str:
    """Subject name as a short identifier: 'MÔN ĐỊA' -> 'dia', 'Môn Vật lý' -> 'vatly', 'dia' -> 'dia'."""
    text = unicodedata.normalize("NFD", str(value)).replace("đ", "d").replace("Đ", "D")
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    words = [w for w in re.split(r"[^a-z0-9]+", text) if w and w != "mon"]
    if "".join(words) in EXAMS_SUBJECTS:
        return "".join(words)
    for word, slug in _SUBJECT_WORDS:
        if word in words:
            return slug
    return "_".join(words) or "unknown"


def _need(row: dict, key: str, where: str, hint: str) -> Any:
    if key not in row or row[key] is None:
        raise DataError(f"{where}: missing field {key!r}; {hint}")
    return row[key]


def _mc_item(row: Any, where: str, task: str, split: str, index: int) -> tuple[dict, str]:
    """Canonical multiple-choice item from a row in either schema, and which schema the row was in."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object per line, got {type(row).__name__}")
    hint = 'multiple-choice items need "question", "choices": {"label": [...], "text": [...]} and "answerKey"'
    question = _need(row, "question", where, hint)
    choices = _need(row, "choices", where, hint)
    answer = _need(row, "answerKey", where, hint)
    if isinstance(choices, dict) and "label" not in choices and "labels" in choices:
        choices = {"label": choices["labels"], "text": choices.get("text")}  # wikipediaqa_vi on the hub says "labels"
    if not (isinstance(choices, dict) and isinstance(choices.get("label"), list) and isinstance(choices.get("text"), list)):
        raise DataError(f'{where}: field \'choices\' is malformed; expected {{"label": [...], "text": [...]}}')
    labels, texts = choices["label"], choices["text"]
    if len(labels) != len(texts):
        raise DataError(f"{where}: field 'choices' has {len(labels)} labels but {len(texts)} texts; give one label per choice")
    if len(texts) < 2:
        raise DataError(f"{where}: field 'choices' has {len(texts)} choice(s); a multiple-choice item needs at least 2")
    for key, values in (("choices.label", labels), ("choices.text", texts)):
        bad = [v for v in values if not isinstance(v, str) or not v]
        if bad:
            raise DataError(f"{where}: field {key!r} has an empty or non-string entry {bad[0]!r}; write each as a non-empty string")
    if len(set(labels)) != len(labels):
        raise DataError(f"{where}: field 'choices.label' repeats a label ({labels}); labels must be unique")
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{where}: field 'question' must be a non-empty string")
    if answer not in labels:
        raise DataError(f"{where}: field 'answerKey' is {answer!r}, not one of the labels {labels}; fix the answer key or the labels")
    if row.get("passage") is not None and not isinstance(row["passage"], str):
        raise DataError(f"{where}: field 'passage' must be a string")
    metadata = row.get("metadata")
    raw_subject = metadata.get("subject") if isinstance(metadata, dict) else metadata  # a category string on the hub
    subject = subject_slug(raw_subject) if raw_subject else task
    item = dict(row)
    item.update(
        id=str(row.get("id", f"{task}-{split}-{index:05d}")),
        choices={"label": list(labels), "text": list(texts)},
        metadata={**(metadata if isinstance(metadata, dict) else {}), "subject": subject},
    )
    # The kit's own rows are used as they are; anything normalised above came from the original datasets.
    as_is = "id" in row and "label" in row["choices"] and (metadata is None or raw_subject == subject)
    return item, "cptnb" if as_is else "villm"


def _lambada_item(row: Any, where: str, task: str, split: str, index: int) -> tuple[dict, str]:
    """Canonical lambada item ``{id, text, context, target}``; ``target`` starts with the space before the word."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object per line, got {type(row).__name__}")
    if "target_word" in row or "context" in row:  # lambada_vi on the hub: explicit context and target
        context = _need(row, "context", where, 'original lambada_vi rows need "context" and "target_word"')
        target = _need(row, "target_word", where, 'original lambada_vi rows need "context" and "target_word"')
        if not (isinstance(context, str) and context.strip() and isinstance(target, str) and target.strip()):
            raise DataError(f"{where}: fields 'context' and 'target_word' must be non-empty strings")
        item = {"id": str(row.get("id", f"{task}-{split}-{index:05d}")), "text": row.get("text", context + target),
                "context": context.rstrip(), "target": TARGET_DELIMITER + target.strip()}
        return item, "villm"
    text = _need(row, "text", where, 'lambada items need "text" (a passage whose last word is the target)')
    if not isinstance(text, str):
        raise DataError(f"{where}: field 'text' must be a string, got {type(text).__name__}")
    # Same split as lm-eval's lambada YAML: the target is what follows the last single space.
    words = text.split(" ")
    context, target = " ".join(words[:-1]), words[-1]
    if len(words) < 2 or not context.strip() or not target or target != target.strip():
        raise DataError(
            f"{where}: field 'text' has no last word to predict ({text[-40:]!r}); it must be a passage "
            "ending in a word after a single space, with no trailing space or newline"
        )
    item = dict(row)
    item.update(id=str(row.get("id", f"{task}-{split}-{index:05d}")), context=context, target=TARGET_DELIMITER + target)
    return item, "cptnb" if "id" in row else "villm"


# ---------------------------------------------------------------- loading


def _find(folder: Path, named: str, patterns: tuple[str, ...]) -> list[Path]:
    if named:
        path = folder / named
        if not path.is_file():
            raise ConfigError([f"file not found: {path}; fix test_file/dev_file in task.yaml"], str(folder / "task.yaml"))
        return [path]
    for pattern in patterns:
        found = sorted(folder.glob(pattern))
        if found:
            return found
    return []


def _read_spec(folder: Path) -> TaskSpec:
    path = folder / "task.yaml"
    if not path.is_file():
        return TaskSpec()
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError([f"not valid YAML: {err}"], str(path)) from None
    if not isinstance(values, dict):
        raise ConfigError(["top level must be a mapping of TaskSpec fields"], str(path))
    try:
        return TaskSpec.from_dict(values, where=str(path))
    except ConfigError as err:  # name the file, not the class
        raise ConfigError(err.problems, str(path)) from None


def _load_split(files: list[Path], kind: str, task: str, split: str) -> tuple[list[dict], set[str]]:
    make = _lambada_item if kind == "lambada" else _mc_item
    items, schemas, seen = [], set(), {}
    for path in files:
        for where, row in read_records(path):
            item, schema = make(row, where, task, split, len(items))
            if item["id"] in seen:
                raise DataError(f"{where}: id {item['id']!r} already used at {seen[item['id']]}; ids must be unique")
            seen[item["id"]] = where
            items.append(item)
            schemas.add(schema)
    return items, schemas


def _infer_kind(files: list[Path]) -> str:
    for _, row in read_records(files[0]):
        return "multiple_choice" if isinstance(row, dict) and "choices" in row else "lambada"
    return "multiple_choice"


def load_task(folder: str | Path, num_fewshot: int | None = None, fewshot_seed: int | None = None) -> Task:
    """Load one task folder (``test`` + optional ``dev`` split + optional ``task.yaml``).

    ``num_fewshot`` / ``fewshot_seed`` override the task's own values (e.g. from
    :class:`~cptnb.config.EvalConfig`). Malformed items raise :class:`DataError`
    naming ``file:line`` and the field; an impossible few-shot setting raises
    :class:`ConfigError`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError([f"task folder not found: {folder}; pass a task folder or a folder of task folders"], str(folder))
    spec = _read_spec(folder)
    defaults = TASK_DEFAULTS.get(folder.name, {})
    name = spec.name or defaults.get("name", folder.name)
    test_files = _find(folder, spec.test_file, TEST_FILES)
    if not test_files:
        raise DataError(f"{folder}: no test split found ({', '.join(TEST_FILES[:3])}); put the scored items in test.jsonl")
    kind = spec.kind or defaults.get("kind") or _infer_kind(test_files)
    shots = spec.num_fewshot if spec.num_fewshot >= 0 else defaults.get("num_fewshot", 0)
    if num_fewshot is not None and num_fewshot >= 0 and shots != 0:
        shots = num_fewshot  # like lm-eval, an override never turns a zero-shot task into a few-shot one
    where = str(folder / "task.yaml")
    if kind == "lambada" and shots:
        raise ConfigError([f"num_fewshot must be 0 for a lambada task, got {shots}"], where)
    items, schemas = _load_split(test_files, kind, name, "test")
    if not items:
        raise DataError(f"{test_files[0]}: no items; a task needs at least one scored item")
    dev_files = _find(folder, spec.dev_file, DEV_FILES)
    pool, dev_schemas = _load_split(dev_files, kind, name, "dev") if dev_files else ([], set())
    split_by_subject = kind == "multiple_choice" and bool(spec.split_by_subject or defaults.get("split_by_subject"))
    subjects: list[str] = []
    if split_by_subject:
        subjects = [subject_slug(s) for s in spec.subjects] or list(dict.fromkeys(i["metadata"]["subject"] for i in items))
        stray = [i for i in items if i["metadata"]["subject"] not in subjects]
        if stray:
            problem = (f"item {stray[0]['id']!r} has subject {stray[0]['metadata']['subject']!r}, which is not in "
                       f"subjects {subjects}; add it to the list or leave the list empty")
            raise ConfigError([problem], where)
    task = Task(
        name=name, kind=kind, role=spec.role or defaults.get("role", "domain"), num_fewshot=shots,
        items=items, fewshot_pool=pool, path=folder, language=spec.language or defaults.get("language", "vi"),
        template=spec.doc_to_text or PROMPTS[spec.prompt or defaults.get("prompt", "qa_vi")],
        description=spec.description, split_by_subject=split_by_subject, subjects=subjects,
        fewshot_seed=spec.fewshot_seed if fewshot_seed is None else fewshot_seed,
        schema="villm" if "villm" in schemas | dev_schemas else "cptnb",
        test_file=test_files[0], dev_file=dev_files[0] if dev_files else None,
    )
    _check_fewshot(task, where)
    return task


def _check_fewshot(task: Task, where: str) -> None:
    if not task.num_fewshot:
        return
    if not task.fewshot_pool:
        problem = (f"num_fewshot is {task.num_fewshot} but {task.path} has no dev split: add dev.jsonl "
                   "(few-shot examples are never drawn from the scored items) or set num_fewshot: 0")
        raise ConfigError([problem], where)
    scored_ids = {i["id"] for i in task.items}
    scored_questions = {i.get("question") for i in task.items}
    leaked = [d["id"] for d in task.fewshot_pool if d["id"] in scored_ids or d.get("question") in scored_questions]
    if leaked:
        raise DataError(f"{task.dev_file}: dev item {leaked[0]!r} is also a scored test item (same id or question); "
                        "remove it from one of the splits")
    for subject, pool in _pools(task).items():
        if len(pool) < task.num_fewshot:
            raise ConfigError([f"num_fewshot is {task.num_fewshot} but the dev split has only {len(pool)} item(s)"
                               + (f" of subject {subject!r}" if task.split_by_subject else "")
                               + "; add dev items or lower num_fewshot"], where)


def load_tasks(path: str | Path, num_fewshot: int | None = None, fewshot_seed: int | None = None) -> list[Task]:
    """Tasks in ``path``: a task folder, or a folder of task folders (sorted by name).

    Example::

        load_tasks("data_samples/eval")            # every task
        load_tasks("data_samples/eval/exams_vi")   # one task
    """
    path = Path(path)
    if not path.is_dir():
        raise ConfigError([f"not a folder: {path}; pass a task folder or a folder of task folders"], "tasks")
    if (path / "task.yaml").is_file() or _find(path, "", TEST_FILES):
        return [load_task(path, num_fewshot, fewshot_seed)]
    folders = [p for p in sorted(path.iterdir()) if p.is_dir() and ((p / "task.yaml").is_file() or _find(p, "", TEST_FILES))]
    if not folders:
        raise DataError(f"{path}: no task folders (each needs a test.jsonl or task.yaml); check the path")
    return [load_task(p, num_fewshot, fewshot_seed) for p in folders]


# ---------------------------------------------------------------- few-shot and prompts


def _pools(task: Task) -> dict[str, list[dict]]:
    if not task.split_by_subject:
        return {"": task.fewshot_pool}
    return {s: [d for d in task.fewshot_pool if d["metadata"]["subject"] == s] for s in task.subjects}


def subtasks(task: Task, limit: int | None = None) -> dict[str, list[dict]]:
    """Scored items per sub-task ('' when the task is not split by subject), each cut to ``limit`` like lm-eval's --limit."""
    if task.split_by_subject:
        groups = {s: [i for i in task.items if i["metadata"]["subject"] == s] for s in task.subjects}
    else:
        groups = {"": list(task.items)}
    return {s: items[:limit] if limit else items for s, items in groups.items()}


def fewshot_plan(task: Task, limit: int | None = None) -> list[tuple[dict, list[dict]]]:
    """(item, few-shot examples) for every scored item, per sub-task in file order.

    Reproduces lm-eval's default ``ContextSampler``: one ``random.Random(seed)``
    per (sub-)task, and for each scored document in order
    ``rnd.sample(dev_pool, num_fewshot)``. The pool is the dev split only (its
    file order; for exams_vi the subject's dev items), so a scored item can
    never be its own example, and the same seed gives the same prompts.
    """
    pools = _pools(task)
    plan: list[tuple[dict, list[dict]]] = []
    for subject, items in subtasks(task, limit).items():
        pool = pools.get(subject, [])
        rnd = random.Random(task.fewshot_seed)
        for item in items:
            plan.append((item, rnd.sample(pool, task.num_fewshot) if task.num_fewshot else []))
    return plan


@functools.lru_cache(maxsize=1)
def _jinja():
    from jinja2 import BaseLoader, Environment, StrictUndefined

    env = Environment(loader=BaseLoader, undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["regex_replace"] = lambda s, pattern, repl, count=0: re.sub(pattern, repl, s, count=count)
    return env


def render(template: str, doc: dict) -> str:
    """Render a Jinja prompt template over an item, with lm-eval's settings (strict, trailing newline kept)."""
    from jinja2 import TemplateError

    if template in doc:  # lm-eval reads a template that names a field as that field
        return doc[template]
    try:
        return _jinja().from_string(template).render(**doc)
    except (TemplateError, TypeError, ValueError, LookupError, AttributeError) as err:
        raise DataError(f"item {doc.get('id')!r}: prompt template {template!r} failed ({err}); "
                        "fix the template (task.yaml prompt/doc_to_text) or add the missing field") from None


def gold_index(item: dict) -> int:
    return item["choices"]["label"].index(item["answerKey"])


def context(task: Task, item: dict, shots: list[dict]) -> str:
    """The prompt an item is scored after: description, few-shot examples with answers, then the item."""
    if task.kind == "lambada":
        return task.description + item["context"]
    examples = "".join(
        render(task.template, s) + TARGET_DELIMITER + s["choices"]["text"][gold_index(s)] + FEWSHOT_DELIMITER for s in shots
    )
    return task.description + examples + render(task.template, item)


def continuations(task: Task, item: dict) -> list[str]:
    """What is scored after the context: ``" " + choice`` per choice, or the lambada target (``" word"``)."""
    if task.kind == "lambada":
        return [item["target"]]
    return [TARGET_DELIMITER + text for text in item["choices"]["text"]]
