"""What an export is asked to do (:class:`ExportConfig`) and what it found and wrote (the result types)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cptnb.configbase import BYTES_PER_VALUE, DTYPE_NAMES, Section, canonical_dtype, choice, option
from cptnb.errors import ConfigError

EXPORT_DTYPES = DTYPE_NAMES  # the kit's one dtype vocabulary (bf16, fp16, fp32); bfloat16 etc. normalise


@dataclass
class ExportConfig(Section):
    """What to export, from where, and how."""

    run_dir: str = option("", "Training run folder (holds adapter/ or model/, recipe.yaml, data/report.json).")
    adapter_dir: str = option(
        "", "A LoRA adapter folder (e.g. a checkpoint) to export; alone, or with run_dir for the card."
    )
    base_model: str = option(
        "", "Base model: alias, local folder or hub id; empty uses the run's recipe or the adapter's record."
    )
    out_dir: str = option("export", "Folder to write adapter/, merged/, README.md, recipe.yaml and export.json into.")
    dtype: str = option(
        "bf16", "Dtype of the merged weights on disk: bf16, fp16 or fp32 (bfloat16, float16, float32 read as these)."
    )
    merge: bool = option(True, "Write merged/, a full model with the adapter folded in (LoRA/QLoRA runs).")
    check: bool = option(True, "Reload merged/ with plain transformers and compare logits with base + adapter.")
    eval_files: list = option([], "Evaluation results to embed in the card (.md or .json); empty looks in run_dir.")
    language: list = option(
        [], "Language codes for the card; empty uses the recipe's data.language (+ replay_language)."
    )
    license: str = option("", "License id for the card; empty writes a placeholder you must replace before publishing.")
    overwrite: bool = option(False, "Replace an earlier export in out_dir (only the files an export writes).")
    interpolation_alpha: float = option(
        1.0, "Export base + alpha x (trained - base) instead of the model as trained: 1 as trained, 0 the base, 0.5 "
        "halfway (the LoRA scale and the trained embeddings, or every weight of a full run); see cptnb sweep."
    )

    format: str = option(
        "safetensors", "safetensors: adapter/ and merged/; gguf: also gguf/, GGUF files of merged/ for llama.cpp, "
        "Ollama and LM Studio (types from gguf_types) with an Ollama Modelfile, each reloaded and checked."
    )
    gguf_types: list = option(
        ["f16", "q8_0"], "GGUF encodings written with format gguf: f32, f16, bf16, q8_0 (8 bits per value, about "
        "half the size of f16)."
    )

    def __post_init__(self) -> None:
        self.dtype = canonical_dtype(self.dtype)
        super().__post_init__()

    def problems(self) -> list[str]:
        p: list[str] = []
        choice(p, "dtype", self.dtype, EXPORT_DTYPES)
        if not (self.run_dir or self.adapter_dir):
            p.append("set run_dir (a training run folder) or adapter_dir (a LoRA adapter folder, with base_model)")
        if not str(self.out_dir).strip():
            p.append("out_dir must be a folder path, e.g. exports/my-model")
        choice(p, "format", self.format, ("safetensors", "gguf"))
        bad_types = [t for t in self.gguf_types if t not in ("f32", "f16", "bf16", "q8_0")]
        if bad_types or (self.format == "gguf" and not self.gguf_types):
            p.append(f"gguf_types must be one or more of f32, f16, bf16, q8_0, got {list(self.gguf_types)!r}")
        if self.format == "gguf" and not self.merge:
            p.append("format gguf converts merged/: set merge=True (or format=safetensors to keep the adapter only)")
        alpha = self.interpolation_alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            p.append(f"interpolation_alpha must be in [0, 1] (0 = the base model, 1 = as trained), got {alpha!r}")
        return p


# Largest |logit difference| allowed between a saved fp32 merged file, read back, and the same model in memory
# before saving. Saving loses nothing in a faithful export (measured 0.0, bit-identical); a dropped tensor, a
# broken tie or a lost resized row moves logits by far more.
ROUNDTRIP_TOLERANCE = 1e-5


@dataclass
class ReloadCheck:
    """Logits of the reloaded merged model against the trained model, on the fixed check texts.

    Two comparisons: against the trained model (base + adapter, or the full model),
    where fp32 arithmetic alone differs by about 3e-6 of the largest logit (merging
    changes the order of the sums), and, for an fp32 file, against the merged model
    as it was saved, which a faithful file reproduces exactly.
    """

    dtype: str
    texts: int
    tokens: int
    max_abs_diff: float
    mean_abs_diff: float
    reference_scale: float  # max(1, largest |logit| of the trained model)
    tolerance: float  # CHECK_TOLERANCE[dtype] * reference_scale
    top1_agreement: float  # share of positions where both models predict the same next token
    adapter_effect_max_abs: float | None  # max |logit change| the adapter makes over the base (LoRA only)
    saved_max_abs_diff: float | None = None  # fp32 files: against the merged model in memory before saving

    @property
    def reads_back_as_saved(self) -> bool:
        """The file gives the logits of the model that was saved (True where that part was not measured)."""
        return self.saved_max_abs_diff is None or self.saved_max_abs_diff <= ROUNDTRIP_TOLERANCE

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.reads_back_as_saved


@dataclass
class RunFacts:
    """What the export knows about the trained model: where it is, how it was trained, on what data."""

    method: str  # lora | qlora | full
    trained_dir: Path  # the adapter folder, or the full model folder
    base_name: str  # as the user named it: alias, hub id or folder
    base_source: str  # the folder (or hub id) the base weights load from
    run_dir: Path | None = None
    recipe: Any = None  # cptnb.config.Recipe when the run has recipe.yaml
    report: dict | None = None  # data/report.json
    adapter_config: dict = field(default_factory=dict)
    steps: int | None = None  # optimizer steps, from metrics.jsonl


@dataclass
class ExportResult:
    """Where the export went and what the check measured."""

    out_dir: Path
    card: Path
    export_json: Path
    adapter_dir: Path | None
    merged_dir: Path | None
    check: ReloadCheck | None
    tied_embeddings: str | None  # tied | untied | separate, for the merged model
    dtype: str = "bf16"  # of the merged weights on disk
    gguf: list = field(default_factory=list)  # cptnb.export.gguf.GgufFile for each GGUF written (format gguf)

    def files(self) -> list[tuple[str, int]]:
        """Every file the export wrote: (path relative to ``out_dir``, bytes), sorted by path."""
        return [(str(p.relative_to(self.out_dir)), p.stat().st_size) for p in sorted(self.out_dir.rglob("*"))
                if p.is_file()]

    def sizes(self) -> dict[str, int]:
        """Bytes on disk of ``adapter`` and ``merged`` (0 for a part this export did not write)."""
        return {"adapter": _folder_bytes(self.adapter_dir), "merged": _folder_bytes(self.merged_dir)}

    def merged_bytes_in(self, dtype: str) -> int:
        """About how many bytes ``merged/`` would take stored in ``dtype`` (bf16, fp16, fp32) instead of its own.

        The weights (``*.safetensors``) scale with the bytes per value, 2 for
        bf16 and fp16, 4 for fp32; the tokenizer and config files stay as they
        are. A bf16 export of 270 MB is about 540 MB in fp32.
        """
        dtype = canonical_dtype(dtype)
        if dtype not in BYTES_PER_VALUE:
            raise ConfigError([f"dtype must be one of {', '.join(DTYPE_NAMES)}; got {dtype!r}"], "merged_bytes_in")
        if self.merged_dir is None:
            return 0
        weights = sum(p.stat().st_size for p in self.merged_dir.glob("*.safetensors"))
        scale = BYTES_PER_VALUE[dtype] / BYTES_PER_VALUE[self.dtype]
        return round(_folder_bytes(self.merged_dir) - weights + weights * scale)


def _folder_bytes(folder: Path | None) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder is not None else 0

