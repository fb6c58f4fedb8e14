"""Typed recipe for a continued-pretraining run.

A :class:`Recipe` groups four sections: :class:`DataConfig`, :class:`ModelConfig`,
:class:`TrainConfig` and :class:`EvalConfig`. Each field carries a one-sentence
``help`` (shown by the CLI and in YAML dumps); each section validates itself in
``__post_init__`` and reports every problem at once, with the fix.

Recipes are frozen: change one with :meth:`Recipe.replace`, which returns a
changed copy checked exactly like a new recipe (assigning a field raises a
:class:`~cptnb.errors.ConfigError` naming the ``replace`` to write instead).

Example::

    recipe = Recipe.from_sample("smollm2_vi_lora_cpu")  # or Recipe.from_yaml("recipe.yaml")
    recipe = recipe.replace(train={"max_steps": 40}, model={"lora_rank": 8})
    recipe.to_yaml("run/recipe.yaml")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from cptnb.configbase import DTYPE_NAMES, RECIPE_PATHS, nested_sections
from cptnb.configbase import Section as _Section
from cptnb.configbase import canonical_dtype as _canonical_dtype
from cptnb.configbase import choice as _choice
from cptnb.configbase import option as _f
from cptnb.configbase import positive as _positive
from cptnb.data.decontam import DecontamConfig
from cptnb.data.dedup import DedupConfig
from cptnb.data.filters import FilterConfig
from cptnb.data.langid import LangIdConfig
from cptnb.data.pack import PACKING_MODES
from cptnb.data.scale.config import ScaleConfig
from cptnb.errors import ConfigError
from cptnb.paths import data_samples_dir
from cptnb.retention import watch_problems
from cptnb.vocab.config import VocabConfig, extension_problems

METHODS = ("lora", "qlora", "full")
BACKENDS = ("auto", "unsloth", "transformers")
DTYPES = ("auto", *DTYPE_NAMES)  # bf16, fp16, fp32; bfloat16, float16, float32 are read as these
PRECISIONS = ("auto", *DTYPE_NAMES)
SCHEDULERS = ("cosine", "linear", "constant")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class ModelConfig(_Section):
    """Which model to start from and how to make it trainable."""

    name: str = _f(
        "smollm2-135m", "Hub id (e.g. meta-llama/Llama-3.2-1B), local directory, or alias smollm2-135m | tiny-llama."
    )
    method: str = _f("lora", "lora (adapters), qlora (adapters on a 4-bit base) or full (every weight trains).")
    backend: str = _f("auto", "auto picks Unsloth when a CUDA GPU and Unsloth are present, else transformers + PEFT.")
    dtype: str = _f(
        "auto", "Weight dtype: auto (bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU), bf16, fp16, fp32."
    )
    max_seq_len_tokens: int = _f(256, "Length of a packed training block, in tokens.")
    lora_rank: int = _f(16, "LoRA rank r: the size of each low-rank update.")
    lora_alpha: int = _f(32, "LoRA alpha: updates are scaled by alpha / r (alpha / sqrt(r) with rsLoRA).")
    lora_dropout: float = _f(0.0, "Dropout on the LoRA input, 0 to 1.")
    use_rslora: bool = _f(False, "Rank-stabilised LoRA scaling (alpha / sqrt(r)), helpful for large ranks.")
    use_dora: bool = _f(
        False, "DoRA (PEFT use_dora): each adapted weight's magnitude trains too, beside the LoRA direction update."
    )
    loraplus_lr_ratio: float = _f(
        0.0, "LoRA+: the B matrices learn this many times faster than learning_rate (e.g. 16); 0 means plain LoRA."
    )
    target_modules: Any = _f(
        "all-linear", "LoRA targets: 'all-linear' or a list of module names such as [q_proj, v_proj]."
    )
    train_embeddings: bool = _f(False, "Also train embed_tokens and lm_head in full (recommended for a new language).")
    cache_dir: str = _f("", "Where built aliases are stored; empty means $CPTNB_CACHE or ~/.cache/cptnb.")
    seed: int = _f(1309, "Seed for LoRA initialisation and the tiny model's random weights.")
    trust_remote_code: bool = _f(False, "Allow model code from the hub (only for models you trust).")
    vocab: VocabConfig = field(
        default_factory=VocabConfig, metadata={"help": "Vocabulary extension learned from the corpus."}
    )

    def __post_init__(self) -> None:
        self.dtype = _canonical_dtype(self.dtype)  # old recipes say bfloat16 / float16 / float32
        super().__post_init__()

    def problems(self) -> list[str]:
        p: list[str] = []
        if not isinstance(self.name, str) or not self.name.strip():
            p.append("name must be a hub id, a local directory or an alias (smollm2-135m, tiny-llama)")
        _choice(p, "method", self.method, METHODS)
        _choice(p, "backend", self.backend, BACKENDS)
        _choice(p, "dtype", self.dtype, DTYPES)
        _positive(p, "max_seq_len_tokens", self.max_seq_len_tokens)
        _positive(p, "lora_rank", self.lora_rank)
        _positive(p, "lora_alpha", self.lora_alpha)
        if not (isinstance(self.lora_dropout, (int, float)) and 0 <= self.lora_dropout < 1):
            p.append(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if not isinstance(self.use_dora, bool):
            p.append(f"use_dora must be true or false, got {self.use_dora!r}")
        ratio = self.loraplus_lr_ratio
        if not (isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and (ratio == 0 or ratio >= 1)):
            p.append(f"loraplus_lr_ratio must be 0 (off) or >= 1 (B's learning rate / A's), got {ratio!r}")
        if self.method == "full" and (self.use_dora is True or ratio):
            p.append("use_dora and loraplus_lr_ratio change LoRA adapters: set method to lora or qlora, "
                     "or turn them off")
        tm = self.target_modules
        if not (tm == "all-linear" or (isinstance(tm, list) and tm and all(isinstance(x, str) for x in tm))):
            p.append(f"target_modules must be 'all-linear' or a non-empty list of module names, got {tm!r}")
        p += extension_problems(self)
        return p


@dataclass
class TrainConfig(_Section):
    """How long and how fast to train, and where to write the run."""

    output_dir: str = _f("runs/cpt", "Directory for checkpoints, metrics.jsonl and the final adapter or model.")
    max_steps: int = _f(40, "Optimizer steps to run; -1 means use num_train_epochs instead.")
    num_train_epochs: float = _f(1.0, "Passes over the packed training set (used when max_steps is -1).")
    per_device_batch_size: int = _f(4, "Packed blocks per device per micro-batch.")
    gradient_accumulation_steps: int = _f(1, "Micro-batches summed into one optimizer step.")
    learning_rate: float = _f(2e-4, "Peak learning rate for LoRA weights or full weights.")
    embedding_learning_rate: float = _f(
        0.0, "Learning rate for embed_tokens/lm_head when trained; 0 means learning_rate / 10."
    )
    lr_scheduler: str = _f("cosine", "Schedule after warmup: cosine, linear or constant.")
    warmup_steps: int = _f(0, "Linear warmup length in optimizer steps (takes precedence over warmup_ratio).")
    warmup_ratio: float = _f(0.05, "Warmup as a share of all steps, used when warmup_steps is 0.")
    min_lr_ratio: float = _f(0.1, "Floor of the decay, as a share of the peak learning rate.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    max_grad_norm: float = _f(1.0, "Gradient clipping threshold (global L2 norm).")
    optimizer: str = _f("adamw_torch", "Optimizer name as transformers knows it (adamw_torch, adamw_8bit, ...).")
    precision: str = _f("auto", "Mixed precision: auto, bf16, fp16 or fp32.")
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass to save memory.")
    logging_steps: int = _f(1, "Log train loss every N optimizer steps.")
    eval_steps: int = _f(0, "Evaluate held-out domain/general loss every N steps; 0 disables periodic eval.")
    task_eval_limit: int = _f(
        8, "At each eval step also score the first N items of each task of task_eval_names (of each subject for "
        "exams_vi), as `cptnb evaluate --eval.limit N` scores them; 0 scores no task during training."
    )
    task_eval_names: list = _f(
        [], "Tasks of eval.tasks scored during training, by name (e.g. [general_en, lambada_vi]), or [all]; empty "
        "means the role=general ones (the retention signal, cheap enough for every eval step)."
    )
    eval_generations: bool = _f(True, "At each eval step also generate greedily for eval.prompts (if there are any).")
    max_general_bpb_rise: float = _f(
        0.0, "Retention threshold: largest acceptable rise of held-out general bits per byte over the base, as a share "
        "(0.02 = 2%); 0 means not checked."
    )
    max_general_task_drop: float = _f(
        0.0, "Retention threshold: largest acceptable drop of mean general-task accuracy below the base, as a share "
        "(0.05 = 5 points); 0 means not checked."
    )
    on_regression: str = _f(
        "warn", "When training crosses a retention threshold: warn (log it, go on) or stop (end training and keep "
        "the best checkpoint within the threshold)."
    )
    report_to: list = _f(
        [], "Experiment trackers given the metrics.jsonl events: tensorboard, trackio, wandb, mlflow (offline unless "
        "you log in); empty means none."
    )
    save_steps: int = _f(
        0, "Save a resumable checkpoint every N steps; 0 saves none (the final adapter/model is always saved)."
    )
    save_total_limit: int = _f(2, "Keep at most this many checkpoints.")
    seed: int = _f(1309, "Seed for data order and dropout.")
    distributed_backend: str = _f("ddp", "Multi-GPU strategy under accelerate/torchrun: ddp, fsdp or deepspeed.")
    zero_stage: int = _f(0, "DeepSpeed ZeRO stage (0-3) when distributed_backend is deepspeed; 0 means off.")

    def __post_init__(self) -> None:
        self.precision = _canonical_dtype(self.precision)  # bfloat16 reads as bf16, as in model.dtype
        if isinstance(self.report_to, str):  # report_to: tensorboard, as transformers' TrainingArguments takes it
            self.report_to = [] if self.report_to in ("", "none") else [self.report_to]
        super().__post_init__()

    def problems(self) -> list[str]:
        p: list[str] = []
        _choice(p, "distributed_backend", self.distributed_backend, ("ddp", "fsdp", "deepspeed"))
        if self.zero_stage not in (0, 1, 2, 3):
            p.append(f"zero_stage must be 0, 1, 2 or 3, got {self.zero_stage!r}")
        if not (self.max_steps == -1 or (isinstance(self.max_steps, int) and self.max_steps > 0)):
            p.append(f"max_steps must be > 0, or -1 to train by epochs; got {self.max_steps!r}")
        _positive(p, "num_train_epochs", self.num_train_epochs)
        _positive(p, "per_device_batch_size", self.per_device_batch_size)
        _positive(p, "gradient_accumulation_steps", self.gradient_accumulation_steps)
        _positive(p, "learning_rate", self.learning_rate)
        _positive(p, "embedding_learning_rate", self.embedding_learning_rate, allow_zero=True)
        _choice(p, "lr_scheduler", self.lr_scheduler, SCHEDULERS)
        _positive(p, "warmup_steps", self.warmup_steps, allow_zero=True)
        if not (isinstance(self.warmup_ratio, (int, float)) and 0 <= self.warmup_ratio < 1):
            p.append(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if not (isinstance(self.min_lr_ratio, (int, float)) and 0 <= self.min_lr_ratio <= 1):
            p.append(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        _positive(p, "weight_decay", self.weight_decay, allow_zero=True)
        _positive(p, "max_grad_norm", self.max_grad_norm)
        _choice(p, "precision", self.precision, PRECISIONS)
        _positive(p, "logging_steps", self.logging_steps)
        _positive(p, "eval_steps", self.eval_steps, allow_zero=True)
        _positive(p, "save_steps", self.save_steps, allow_zero=True)
        _positive(p, "save_total_limit", self.save_total_limit)
        p += watch_problems(self)
        return p

    @property
    def effective_embedding_learning_rate(self) -> float:
        return self.embedding_learning_rate or self.learning_rate / 10


@dataclass
class DataConfig(_Section):
    """Where the corpus comes from, how it is cleaned, and how it is cut into training blocks."""

    # Fields holding file/folder paths (Recipe.with_paths_under resolves them against the repository root).
    PATH_FIELDS: ClassVar[tuple[str, ...]] = (
        "sources", "replay_sources", "heldout_domain", "heldout_general", "eval_tasks"
    )

    sources: list = _f(
        ["data_samples/vi"], "Domain corpus: files, folders or globs (.jsonl .json .txt .parquet .csv, saved datasets)."
    )
    text_field: str = _f("text", "Field (column) holding the document text in structured sources.")
    on_error: str = _f(
        "raise", "Bad input: raise (stop with file and line) or skip (count under its reason and go on)."
    )
    txt_mode: str = _f("blocks", "Plain-text files: one document per blank-line-separated block, or per file.")
    language: str = _f("vi", "Language of the domain corpus (language filter and quality-filter defaults).")
    replay_sources: list = _f([], "General-language files mixed in to limit forgetting.")
    replay_language: str = _f("en", "Language of the replay sources.")
    replay_share: float = _f(0.0, "Target share of training tokens taken from replay_sources, 0 to 0.9.")
    heldout_share: float = _f(0.05, "Share of documents held out (by text hash) from each corpus for evaluation.")
    heldout_domain: list = _f(
        ["data_samples/heldout/vi_heldout.jsonl"], "Extra held-out domain documents for loss/perplexity/bits per byte."
    )
    heldout_general: list = _f(
        ["data_samples/heldout/en_heldout.jsonl"], "Extra held-out general documents: the forgetting signal."
    )
    eval_tasks: list = _f(
        [], "Evaluation task files or folders: training documents sharing long n-grams with them are dropped."
    )
    min_chars: int = _f(20, "Documents shorter than this many characters after cleaning are dropped (and counted).")
    block_tokens: int = _f(0, "Packed block length in tokens; 0 means model.max_seq_len_tokens.")
    packing: str = _f(
        "concat",
        "concat: documents joined by EOS, each token attends to the whole block before it; document: the same "
        "blocks, each document attends only to itself (position ids restart at every document).",
    )
    num_proc: Any = _f(
        "auto",
        "Worker processes for clean, language id and filters: an integer (1 = none) "
        "or auto (one per core from 8 MB of input).",
    )
    chunk_docs: int = _f(
        256, "Documents handed to the per-document stages (or a worker) at a time; bounds memory, not results."
    )
    filters: FilterConfig = field(
        default_factory=FilterConfig, metadata={"help": "Gopher / C4 / FineWeb quality rules."}
    )
    langid: LangIdConfig = field(default_factory=LangIdConfig, metadata={"help": "Offline language identification."})
    dedup: DedupConfig = field(
        default_factory=DedupConfig, metadata={"help": "Exact and MinHash near-duplicate removal."}
    )
    decontam: DecontamConfig = field(
        default_factory=DecontamConfig, metadata={"help": "Drop documents overlapping eval tasks."}
    )
    scale: ScaleConfig = field(
        default_factory=ScaleConfig, metadata={"help": "Where the corpus stage runs: in process or on datatrove."}
    )
    seed: int = _f(1309, "Seed for replay sampling and shuffling.")

    def problems(self) -> list[str]:
        p: list[str] = []
        if not isinstance(self.sources, list) or not self.sources:
            p.append("sources must be a non-empty list of paths")
        _choice(p, "on_error", self.on_error, ("raise", "skip"))
        _choice(p, "txt_mode", self.txt_mode, ("blocks", "file"))
        if not (isinstance(self.replay_share, (int, float)) and 0 <= self.replay_share <= 0.9):
            p.append(f"replay_share must be in [0, 0.9], got {self.replay_share!r}")
        if self.replay_share and not self.replay_sources:
            p.append("replay_share > 0 needs replay_sources (general text to mix in)")
        if not (isinstance(self.heldout_share, (int, float)) and 0 <= self.heldout_share < 0.5):
            p.append(f"heldout_share must be in [0, 0.5), got {self.heldout_share!r}")
        _positive(p, "min_chars", self.min_chars, allow_zero=True)
        _positive(p, "block_tokens", self.block_tokens, allow_zero=True)
        _choice(p, "packing", self.packing, PACKING_MODES)
        if self.num_proc != "auto" and not (
            isinstance(self.num_proc, int) and not isinstance(self.num_proc, bool) and self.num_proc >= 1
        ):
            p.append(f"num_proc must be 'auto' or an integer >= 1 (1 = no worker processes), got {self.num_proc!r}")
        if not (isinstance(self.chunk_docs, int) and not isinstance(self.chunk_docs, bool) and self.chunk_docs >= 1):
            p.append(f"chunk_docs must be an integer >= 1, got {self.chunk_docs!r}")
        p += self._profile_problems()
        return p

    def _profile_problems(self) -> list[str]:
        """A corpus language without a profile is refused here, before any model or file is loaded (issue 19)."""
        from cptnb.data.languages.profile import find_profile, missing_profile_message

        if not (isinstance(self.filters, FilterConfig) and self.filters.enabled):
            return []
        wanted = [("language", self.language)] + ([("replay_language", self.replay_language)]
                                                   if self.replay_sources else [])
        out = []
        for name, language in wanted:
            if isinstance(language, str) and language and find_profile(language, self.filters.profile) is None:
                out.append(f"{name}: {missing_profile_message(language)}")
        return out


@dataclass
class EvalConfig(_Section):
    """What to measure before and after training."""

    window_tokens: int = _f(1024, "Sliding-window length for perplexity on long documents.")
    stride_tokens: int = _f(
        512, "Step between windows; each token is scored once with up to window-stride tokens of context."
    )
    batch_size: int = _f(8, "Perplexity windows, or task items (each with all its choices), scored per forward pass.")
    prompts: list = _f([], "Prompts for the generation spot-check, base and adapted side by side.")
    max_new_tokens: int = _f(40, "Tokens generated per prompt (greedy).")
    tasks: list = _f(
        ["data_samples/eval"],
        "Evaluation task folders (ViLLM-Eval style), or folders of task folders, to score before and after.",
    )
    limit: int = _f(
        0, "Score only the first N items of each task (each subject for exams_vi), like lm-eval's --limit; 0 means all."
    )
    num_fewshot: int = _f(-1, "Few-shot examples per item for every task; -1 keeps each task's own task.yaml value.")
    fewshot_seed: int = _f(
        -1, "Seed of the few-shot draw (lm-eval's fewshot_random_seed); -1 keeps each task's own (1234, as lm-eval)."
    )

    def problems(self) -> list[str]:
        p: list[str] = []
        _positive(p, "window_tokens", self.window_tokens)
        _positive(p, "stride_tokens", self.stride_tokens)
        ints = isinstance(self.stride_tokens, int) and isinstance(self.window_tokens, int)
        if ints and self.stride_tokens > self.window_tokens:
            p.append(f"stride_tokens ({self.stride_tokens}) must be <= window_tokens ({self.window_tokens})")
        _positive(p, "batch_size", self.batch_size)
        _positive(p, "max_new_tokens", self.max_new_tokens)
        if not isinstance(self.tasks, list) or not all(isinstance(t, str) for t in self.tasks):
            p.append(f"tasks must be a list of task folder paths, got {self.tasks!r}")
        _positive(p, "limit", self.limit, allow_zero=True)
        if not (_is_int(self.num_fewshot) and self.num_fewshot >= -1):
            p.append(f"num_fewshot must be >= 0, or -1 to keep each task's own value; got {self.num_fewshot!r}")
        if not (_is_int(self.fewshot_seed) and self.fewshot_seed >= -1):
            p.append(f"fewshot_seed must be >= 0, or -1 to keep each task's own seed; got {self.fewshot_seed!r}")
        return p


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}


@dataclass
class Recipe(_Section):
    """A whole run: data, model, train and eval sections (frozen: change it with :meth:`replace`)."""

    data: DataConfig = field(default_factory=DataConfig, metadata={"help": DataConfig.__doc__})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": ModelConfig.__doc__})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": TrainConfig.__doc__})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": EvalConfig.__doc__})

    def replace(self, **changes: Any) -> "Recipe":
        """A copy with ``changes`` applied, checked like a new recipe: every problem in every section at once.

        Each keyword is a section, given a mapping of the fields to change
        (nested data sections take their own mapping); the other fields keep
        their values, and the recipe it was called on is not modified.

        Example::

            recipe = recipe.replace(
                data={"replay_share": 0.2, "replay_sources": ["data_samples/en"], "dedup": {"threshold": 0.7}},
                train={"max_steps": 40, "learning_rate": 1e-4},
            )
        """
        unknown = sorted(set(changes) - set(_SECTIONS))
        if unknown:
            raise ConfigError([f"unknown section {k!r}; sections are {', '.join(_SECTIONS)}" for k in unknown],
                              "recipe")
        return super().replace(**changes)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name).to_dict() for name in _SECTIONS}

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "recipe") -> "Recipe":
        unknown = sorted(set(values or {}) - set(_SECTIONS))
        if unknown:
            raise ConfigError([f"unknown section {k!r}; sections are {', '.join(_SECTIONS)}" for k in unknown], where)
        # Collect problems from every section before raising, so the user fixes them in one go.
        problems: list[str] = []
        built: dict[str, Any] = {}
        for name, section in _SECTIONS.items():
            try:
                built[name] = section.from_dict((values or {}).get(name), where=f"{where}: {name}")
            except ConfigError as err:
                problems += [f"{name}.{p}" for p in err.problems]
        if problems:
            raise ConfigError(problems, where)
        return cls(**built)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Recipe":
        path = Path(path)
        if not path.is_file():
            raise ConfigError([f"file not found: {path}; pass the path of a recipe YAML"], str(path))
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError([f"not valid YAML: {err}"], str(path)) from None
        if not isinstance(values, dict):
            raise ConfigError(["top level must be a mapping with data/model/train/eval sections"], str(path))
        return cls.from_dict(values, where=str(path))

    @classmethod
    def sample_names(cls) -> list[str]:
        """Names of the sample recipes shipped in ``data_samples/recipes/`` (what :meth:`from_sample` accepts)."""
        return sorted(p.stem for p in _sample_recipes_dir().glob("*.yaml"))

    @classmethod
    def from_sample(cls, name: str, **changes: Any) -> "Recipe":
        """A sample recipe from ``data_samples/recipes/`` by name, its data paths pointing into the kit's data_samples.

        ``name`` is the file name with or without ``.yaml``; an unknown name
        raises :class:`ConfigError` listing the available ones. The recipe's
        relative paths mean the repository root, so they are resolved there
        (:meth:`with_paths_under`) and the recipe works from any working folder.
        ``changes`` are applied as by :meth:`replace` before the paths are
        resolved, so paths given in them are read the same way.

        Example::

            recipe = Recipe.from_sample("smollm2_vi_lora_cpu")
            news_only = Recipe.from_sample("smollm2_vi_lora_cpu", data={"sources": ["data_samples/vi/news.jsonl"]})
        """
        folder = _sample_recipes_dir()
        stem = Path(str(name)).name.removesuffix(".yaml").removesuffix(".yml")
        path = folder / f"{stem}.yaml"
        if not path.is_file():
            available = ", ".join(cls.sample_names()) or f"none (no .yaml files in {folder})"
            raise ConfigError([f"no sample recipe named {name!r}; available: {available}"], "Recipe.from_sample")
        recipe = cls.from_yaml(path)
        return (recipe.replace(**changes) if changes else recipe).with_paths_under(folder.parent.parent)

    def with_paths_under(self, root: str | Path) -> "Recipe":
        """A copy in which each relative data or task path missing from here but present under ``root`` points there.

        Recipe files name data relative to the repository root, while a notebook's
        working folder is often ``notebooks/`` or Colab's ``/content``. Paths that
        exist as given, absolute paths and paths found in neither place are kept
        (reading the last still fails with the path named).

        Example::

            recipe = Recipe.from_yaml(REPO_ROOT / "recipe.yaml").with_paths_under(REPO_ROOT)
        """

        def moved(p) -> bool:  # sources may also hold `datasets` objects: only paths move
            return isinstance(p, (str, Path)) and not Path(p).is_absolute() and not Path(p).exists() \
                and (Path(root) / p).exists()

        def fix(paths: list) -> list:
            return [str(Path(root) / p) if moved(p) else p for p in paths]

        return self.replace(
            data={name: fix(getattr(self.data, name)) for name in DataConfig.PATH_FIELDS},
            eval={"tasks": fix(self.eval.tasks)},
        )

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text, encoding="utf-8")
        return text


def _sample_recipes_dir() -> Path:
    return data_samples_dir() / "recipes"  # data_samples_dir knows where the kit's samples are (clone or env var)


RECIPE_PATHS.update({Recipe: "recipe", **{cls: name for name, cls in _SECTIONS.items()}})
for _name, _cls in _SECTIONS.items():  # the nested sections too: data.dedup, data.filters, ...
    RECIPE_PATHS.update({sub: f"{_name}.{field_name}" for field_name, sub in nested_sections(_cls).items()})
RECIPE_PATHS[VocabConfig] = "model.vocab"
