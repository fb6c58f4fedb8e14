"""Export a trained run: the adapter, a merged model, a model card with provenance, and a reload check.

:func:`export` writes into ``out_dir``:

- ``adapter/``: the LoRA/QLoRA adapter, copied as trained;
- ``merged/``: a full model (safetensors, chosen dtype, tokenizer, generation
  config) that plain ``transformers.AutoModelForCausalLM.from_pretrained`` loads
  without cptnb or PEFT. A QLoRA adapter is merged into the base reloaded in
  full precision, never into the 4-bit weights it trained against;
- ``README.md``: a Hugging Face model card (front matter, data sources with
  document counts and file hashes, decontamination, evaluation table, limits);
- ``recipe.yaml`` (what ran) and ``export.json`` (what was exported, with the check).

The reload check loads ``merged/`` with plain transformers, upcast to float32 so
that only the exported weights differ, and compares its logits on a few fixed
texts with those of the base model + adapter (or the trained full model). It fails
when the largest difference exceeds ``CHECK_TOLERANCE[dtype] * max(1, largest
reference logit)``: rounding error grows with the logits' scale and with the
dtype's unit roundoff (fp32 2^-24, fp16 2^-11, bf16 2^-8). On SmolLM2-135M with
a trained adapter the measured ratios were about 3e-6 (fp32), 1.2e-3 (fp16) and
8e-3 (bf16), each well under its limit (1e-5, 4e-3, 3e-2).

Example::

    result = export_run("runs/smollm2_vi_lora_cpu", "exports/smollm2-vi", dtype="bf16")
    result.check.max_abs_diff
    export_adapter("my_adapter/", base_model="smollm2-135m", out_dir="exports/mine")
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cptnb.card import find_eval_files, read_json, write_model_card
from cptnb.configbase import Section, choice, option
from cptnb.data.provenance import file_manifest
from cptnb.errors import ConfigError, ExportError, ModelNotAvailableError

log = logging.getLogger(__name__)

EXPORT_DTYPES = ("bf16", "fp16", "fp32")
_DTYPE_SPELLINGS = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "half": "fp16", "float": "fp32"}
# Allowed max |logit difference| as a share of the largest reference |logit| (at least 1); see module docstring.
CHECK_TOLERANCE = {"fp32": 1e-5, "fp16": 4e-3, "bf16": 3e-2}
CHECK_MAX_TOKENS = 64
# Fixed texts for the reload check (written for this kit): Vietnamese, the target language, and English.
CHECK_TEXTS = (
    "Hà Nội là thủ đô của Việt Nam, nằm bên bờ sông Hồng.",
    "Vào mùa mưa, nông dân ở đồng bằng sông Cửu Long gieo lúa và nuôi cá trên ruộng.",
    "Trẻ em học đọc, học viết và làm toán ở trường tiểu học.",
    "The library opens at nine in the morning and closes at six in the evening.",
)
CHECKPOINT_ONLY_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth")
OUTPUTS = ("adapter", "merged", "README.md", "recipe.yaml", "export.json")


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
    dtype: str = option("bf16", "Dtype of the merged weights on disk: bf16, fp16 or fp32.")
    merge: bool = option(True, "Write merged/, a full model with the adapter folded in (LoRA/QLoRA runs).")
    check: bool = option(True, "Reload merged/ with plain transformers and compare logits with base + adapter.")
    eval_files: list = option([], "Evaluation results to embed in the card (.md or .json); empty looks in run_dir.")
    language: list = option(
        [], "Language codes for the card; empty uses the recipe's data.language (+ replay_language)."
    )
    license: str = option("", "License id for the card; empty writes a placeholder you must replace before publishing.")
    overwrite: bool = option(False, "Replace an earlier export in out_dir (only the files an export writes).")

    def __post_init__(self) -> None:
        if isinstance(self.dtype, str):
            self.dtype = _DTYPE_SPELLINGS.get(self.dtype.lower(), self.dtype.lower())
        super().__post_init__()

    def problems(self) -> list[str]:
        p: list[str] = []
        choice(p, "dtype", self.dtype, EXPORT_DTYPES)
        if not (self.run_dir or self.adapter_dir):
            p.append("set run_dir (a training run folder) or adapter_dir (a LoRA adapter folder, with base_model)")
        if not str(self.out_dir).strip():
            p.append("out_dir must be a folder path, e.g. exports/my-model")
        return p


@dataclass
class ReloadCheck:
    """Logits of the reloaded merged model against the trained model, on the fixed check texts."""

    dtype: str
    texts: int
    tokens: int
    max_abs_diff: float
    mean_abs_diff: float
    reference_scale: float  # max(1, largest |logit| of the trained model)
    tolerance: float  # CHECK_TOLERANCE[dtype] * reference_scale
    top1_agreement: float  # share of positions where both models predict the same next token
    adapter_effect_max_abs: float | None  # max |logit change| the adapter makes over the base (LoRA only)

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance


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


# --- locating the trained model ------------------------------------------------------------------


def _last_step(metrics: Path) -> int | None:
    if not metrics.is_file():
        return None
    steps = [json.loads(line).get("step") for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
    steps = [s for s in steps if isinstance(s, int)]
    return max(steps) if steps else None


def _base_from_name(name: str, recipe_model=None) -> str:
    from cptnb.config import ModelConfig
    from cptnb.models import resolve_source

    model_cfg = recipe_model if recipe_model is not None and recipe_model.name == name else ModelConfig(name=name)
    return resolve_source(model_cfg)


def _trained_in_run(run_dir: Path) -> Path:
    """The run's final adapter/ or model/ folder, or an error saying how to get one."""
    if (run_dir / "adapter" / "adapter_config.json").is_file():
        return run_dir / "adapter"
    if (run_dir / "model" / "config.json").is_file():
        return run_dir / "model"
    checkpoints = sorted((p.name for p in run_dir.glob("checkpoint-*")), key=lambda n: int(n.split("-")[-1]))
    hint = (
        f" It holds {', '.join(checkpoints)}: export one with adapter_dir={run_dir / checkpoints[-1]}."
        if checkpoints
        else ""
    )
    raise ExportError(
        f"{run_dir} holds neither adapter/ (LoRA/QLoRA runs) nor model/ (full runs): training did not finish. "
        f"Resume it (cptnb train --config {run_dir / 'recipe.yaml'} --resume) or point run_dir at a finished run.{hint}"
    )


def _checked_adapter_dir(path: Path) -> Path:
    if not (path / "adapter_config.json").is_file():
        what = "does not exist" if not path.exists() else "holds no adapter_config.json"
        raise ExportError(
            f"adapter folder {path} {what}; pass the folder PEFT's save_pretrained wrote "
            "(e.g. <run>/adapter or <run>/checkpoint-N)"
        )
    return path


def locate(cfg: ExportConfig) -> RunFacts:
    """Find the adapter or full model, the base model, the recipe and the data report for ``cfg``."""
    from cptnb.config import Recipe

    run_dir = Path(cfg.run_dir).expanduser() if cfg.run_dir else None
    recipe = report = steps = None
    if run_dir is not None:
        if not run_dir.is_dir():
            raise ExportError(f"run folder {run_dir} does not exist; pass the train.output_dir of a finished run")
        recipe = Recipe.from_yaml(run_dir / "recipe.yaml") if (run_dir / "recipe.yaml").is_file() else None
        report = read_json(run_dir / "data" / "report.json") if (run_dir / "data" / "report.json").is_file() else None
        steps = _last_step(run_dir / "metrics.jsonl")
    trained = _checked_adapter_dir(Path(cfg.adapter_dir).expanduser()) if cfg.adapter_dir else _trained_in_run(run_dir)
    if (trained / "trainer_state.json").is_file():  # a checkpoint: its own step, not the run's last
        steps = read_json(trained / "trainer_state.json").get("global_step", steps)
    adapter_config = read_json(trained / "adapter_config.json") if (trained / "adapter_config.json").is_file() else {}
    method = recipe.model.method if recipe is not None else ("lora" if adapter_config else "full")
    base_name = cfg.base_model or (
        recipe.model.name if recipe is not None else adapter_config.get("base_model_name_or_path", "")
    )
    if not base_name:
        raise ExportError(
            f"{trained / 'adapter_config.json'} names no base model; pass base_model (alias, folder or hub id)"
        )
    try:
        base_source = _base_from_name(base_name, recipe.model if recipe is not None else None)
    except ModelNotAvailableError as err:
        raise ModelNotAvailableError(f"{err} Pass base_model= the model this adapter was trained on.") from None
    return RunFacts(method, trained, base_name, base_source, run_dir, recipe, report, adapter_config, steps)


# --- merging -----------------------------------------------------------------------------------------


def torch_dtype(name: str):
    """torch dtype of an export dtype name (bf16, fp16, fp32)."""
    import torch

    if name not in EXPORT_DTYPES:
        raise ConfigError([f"dtype must be one of {', '.join(EXPORT_DTYPES)}; got {name!r}"], "export")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def _load_full_precision(source: str):
    """A model in float32, never quantized: a QLoRA adapter is merged into full-precision base weights."""
    import torch
    from transformers import AutoModelForCausalLM

    from cptnb.models import from_pretrained_or_explain

    model = from_pretrained_or_explain(AutoModelForCausalLM, source, dtype=torch.float32).eval()
    if getattr(model.config, "quantization_config", None) is not None:
        raise ExportError(
            f"{source} is stored quantized, so merging into it would bake in the rounding; pass base_model= the "
            "full-precision model (e.g. the hub id without '-bnb-4bit')"
        )
    return model


def load_adapted(base_source: str, adapter_dir: str | Path):
    """Base model (float32) with the adapter applied but not merged: the reference for the reload check."""
    from peft import PeftModel

    base = _load_full_precision(base_source)
    try:
        return PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False).eval()
    except (RuntimeError, ValueError, KeyError) as err:
        raise ExportError(
            f"adapter {adapter_dir} does not fit base model {base_source} ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:300]}). Pass base_model= the model the adapter was trained on."
        ) from None


def settle_tied_embeddings(model) -> str:
    """Keep tied input/output embeddings consistent after a merge; return 'tied', 'untied' or 'separate'.

    With ``ensure_weight_tying`` PEFT trains one shared matrix and the merge keeps
    the tie. An adapter trained without it (other tools) may hold different
    embed_tokens and lm_head: saving that under ``tie_word_embeddings=True`` would
    silently drop lm_head, so the config is untied and both are kept.
    """
    import torch

    text_config = model.config.get_text_config()
    if not getattr(text_config, "tie_word_embeddings", False):
        return "separate"
    inp, out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    if out is inp:
        return "tied"
    if torch.equal(out, inp):
        model.get_output_embeddings().weight = inp
        return "tied"
    log.warning("embed_tokens and lm_head were trained apart although the base ties them: saving both (untied)")
    text_config.tie_word_embeddings = False
    model.config.tie_word_embeddings = False
    return "untied"


def merge_loaded(adapted, dtype: str = "fp32"):
    """Fold the adapter of a PEFT model into its base and cast to ``dtype``; return (model, embedding state)."""
    merged = adapted.merge_and_unload()
    tying = settle_tied_embeddings(merged)
    return merged.to(torch_dtype(dtype)), tying


def merge_adapter(base_source: str, adapter_dir: str | Path, dtype: str = "fp32"):
    """A plain transformers model: ``base_source`` (loaded in full precision) with ``adapter_dir`` merged in.

    Example::

        model = merge_adapter(resolve_source(ModelConfig(name="smollm2-135m")), "runs/x/adapter", "bf16")
    """
    torch_dtype(dtype)  # an unknown dtype fails before minutes of loading
    return merge_loaded(load_adapted(base_source, adapter_dir), dtype)[0]


def _save_merged(model, tokenizer, out: Path, tying: str) -> None:
    from transformers import GenerationConfig

    if getattr(model, "generation_config", None) is None:
        model.generation_config = GenerationConfig.from_model_config(model.config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _verify_saved_embeddings(model, out, tying)


def _saved_tensors(folder: Path) -> dict[str, Any]:
    """Name -> (dtype string, file) of every tensor in the folder's safetensors files."""
    from safetensors import safe_open

    found = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 (safe_open is not iterable)
                found[key] = (fh.get_slice(key).get_dtype(), path)
    return found


def _verify_saved_embeddings(model, out: Path, tying: str) -> None:
    """Trained embeddings must be on disk exactly as in memory (and lm_head too when not tied)."""
    import torch
    from safetensors import safe_open

    saved = _saved_tensors(out)
    names = {id(p): n for n, p in model.named_parameters()}  # a tied matrix is listed once, as embed_tokens
    wanted = [model.get_input_embeddings().weight]
    if tying != "tied":
        wanted.append(model.get_output_embeddings().weight)
    for tensor in wanted:
        name = names.get(id(tensor))
        if name not in saved:  # some architectures rename keys on save; the reload check still covers them
            continue
        with safe_open(str(saved[name][1]), framework="pt") as fh:
            if not torch.equal(fh.get_tensor(name), tensor.detach().cpu()):
                raise ExportError(f"{out}: saved {name} differs from the merged model's; re-run the export")


# --- the reload check ------------------------------------------------------------------------------


def _encode(tokenizer, texts) -> list:
    return [tokenizer(t, return_tensors="pt")["input_ids"][:, :CHECK_MAX_TOKENS] for t in texts]


def _logits(model, encoded) -> list:
    import torch

    with torch.no_grad():
        return [model(input_ids=ids).logits.float() for ids in encoded]


def compare_logits(reference: list, other: list, dtype: str, adapter_effect: float | None = None) -> ReloadCheck:
    """Differences between two lists of [1, T, vocab] logits, judged with the tolerance for ``dtype``."""
    diffs = [(r - o).abs() for r, o in zip(reference, other, strict=True)]
    positions = sum(d.shape[1] for d in diffs)
    scale = max(1.0, max(float(r.abs().max()) for r in reference))
    agree = sum(int((r.argmax(-1) == o.argmax(-1)).sum()) for r, o in zip(reference, other, strict=True))
    return ReloadCheck(
        dtype=dtype,
        texts=len(reference),
        tokens=positions,
        max_abs_diff=max(float(d.max()) for d in diffs),
        mean_abs_diff=sum(float(d.mean(-1).sum()) for d in diffs) / positions,
        reference_scale=scale,
        tolerance=CHECK_TOLERANCE[dtype] * scale,
        top1_agreement=agree / positions,
        adapter_effect_max_abs=adapter_effect,
    )


def reload_check(
    merged_dir: str | Path, reference_logits: list, encoded: list, dtype: str, adapter_effect=None
) -> ReloadCheck:
    """Load ``merged_dir`` with plain transformers (float32) and compare its logits with ``reference_logits``."""
    reloaded = _load_full_precision(str(merged_dir))
    return compare_logits(reference_logits, _logits(reloaded, encoded), dtype, adapter_effect)


# --- the export ---------------------------------------------------------------------------------------


def _prepare_out_dir(out: Path, facts: RunFacts, overwrite: bool) -> None:
    resolved = out.resolve()
    if resolved in {facts.trained_dir.resolve(), *([facts.run_dir.resolve()] if facts.run_dir else [])}:
        raise ExportError(f"out_dir {out} is the run or adapter folder itself; choose a new folder, e.g. {out}/export")
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and not overwrite:
        raise ExportError(
            f"{out} already holds {', '.join(existing)} from an earlier export; "
            "pass overwrite=True or pick another out_dir"
        )
    for name in existing:  # only what an export writes: never the rest of a folder the user pointed at
        if (out / name).is_dir():
            shutil.rmtree(out / name)
        else:
            (out / name).unlink()
    out.mkdir(parents=True, exist_ok=True)


def _tokenizer_for(facts: RunFacts):
    from transformers import AutoTokenizer

    from cptnb.models import from_pretrained_or_explain

    has_own = any((facts.trained_dir / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
    tokenizer = from_pretrained_or_explain(AutoTokenizer, str(facts.trained_dir) if has_own else facts.base_source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _merged_record(merged_dir: Path, tying: str) -> dict[str, Any]:
    dtypes: dict[str, int] = {}
    for dtype, _ in _saved_tensors(merged_dir).values():
        dtypes[dtype] = dtypes.get(dtype, 0) + 1
    return {
        "path": str(merged_dir),
        "stored_dtypes": dtypes,
        "embeddings": tying,
        "files": file_manifest(sorted(merged_dir.glob("*.safetensors"))),
    }


def _merged_and_reference(facts: RunFacts, dtype: str, encoded: list):
    """(merged model in ``dtype``, float32 reference logits, adapter effect or None, embedding state)."""
    if facts.method == "full":
        model = _load_full_precision(str(facts.trained_dir))
        reference = _logits(model, encoded)
        tying = settle_tied_embeddings(model)
        return model.to(torch_dtype(dtype)), reference, None, tying
    adapted = load_adapted(facts.base_source, facts.trained_dir)
    reference = _logits(adapted, encoded)
    with adapted.disable_adapter():
        effect = max(float((r - b).abs().max()) for r, b in zip(reference, _logits(adapted, encoded), strict=True))
    if effect == 0.0:
        log.warning("the adapter does not change the base model's logits: was it trained?")
    model, tying = merge_loaded(adapted, dtype)
    return model, reference, effect, tying


def _write_merged(facts: RunFacts, cfg: ExportConfig, merged_dir: Path):
    """Save the merged model into ``merged_dir``; return (export.json record, reload check or None, embedding state)."""
    tokenizer = _tokenizer_for(facts)
    encoded = _encode(tokenizer, CHECK_TEXTS)
    model, reference, effect, tying = _merged_and_reference(facts, cfg.dtype, encoded)
    _save_merged(model, tokenizer, merged_dir, tying)
    del model  # the reload below should not hold two copies in memory
    check = reload_check(merged_dir, reference, encoded, cfg.dtype, effect) if cfg.check else None
    return _merged_record(merged_dir, tying), check, tying


def _fail_check(check: ReloadCheck, result: ExportResult) -> None:
    advice = (
        "In fp32 this is not rounding: check that base_model is the model the adapter was trained on"
        if check.dtype == "fp32"
        else "Export with dtype='fp32' to tell rounding from a merge problem"
    )
    raise ExportError(
        f"reload check failed: {result.merged_dir} differs from the trained model by up to {check.max_abs_diff:.4g} "
        f"in logits (tolerance {check.tolerance:.4g} for {check.dtype}; "
        f"top-1 agreement {check.top1_agreement:.1%}). {advice}; the numbers are in {result.export_json}."
    )


def export(cfg: ExportConfig) -> ExportResult:
    """Export a run (or a bare adapter) as described in the module docstring; see :class:`ExportConfig`."""
    facts = locate(cfg)
    out = Path(cfg.out_dir).expanduser()
    eval_files = find_eval_files(cfg.eval_files, facts.run_dir)
    _prepare_out_dir(out, facts, cfg.overwrite)
    adapter_out = out / "adapter" if facts.method != "full" else None
    if adapter_out is not None:
        # A checkpoint also holds optimizer and RNG state, which are not part of the model.
        shutil.copytree(facts.trained_dir, adapter_out, ignore=shutil.ignore_patterns(*CHECKPOINT_ONLY_FILES))
    if facts.run_dir is not None and (facts.run_dir / "recipe.yaml").is_file():
        shutil.copy2(facts.run_dir / "recipe.yaml", out / "recipe.yaml")
    merged_dir, record, check, tying = None, {}, None, None
    if cfg.merge or adapter_out is None:  # a full run's only model is the merged one
        merged_dir = out / "merged"
        record, check, tying = _write_merged(facts, cfg, merged_dir)
    result = ExportResult(out, out / "README.md", out / "export.json", adapter_out, merged_dir, check, tying)
    _write_export_json(result, facts, cfg, record)
    write_model_card(result, facts, cfg, eval_files)
    if check is not None:
        log.info("reload check: max |logit diff| %.3g (tolerance %.3g)", check.max_abs_diff, check.tolerance)
        if not check.passed:
            _fail_check(check, result)
    return result


def _write_export_json(result: ExportResult, facts: RunFacts, cfg: ExportConfig, merged: dict[str, Any]) -> None:
    import cptnb

    payload = {
        "cptnb_version": cptnb.__version__,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "method": facts.method,
        "dtype": cfg.dtype,
        "base_model": facts.base_name,
        "base_source": facts.base_source,
        "run_dir": str(facts.run_dir) if facts.run_dir else None,
        "trained_dir": str(facts.trained_dir),
        "adapter": str(result.adapter_dir) if result.adapter_dir else None,
        "merged": merged or None,
        "merged_into_full_precision_base": facts.method == "qlora" and bool(merged),
        "check": {**asdict(result.check), "passed": result.check.passed} if result.check else None,
    }
    result.export_json.write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")


def export_run(run_dir: str | Path, out_dir: str | Path, dtype: str = "bf16", **options: Any) -> ExportResult:
    """Export a training run folder; ``options`` are further :class:`ExportConfig` fields."""
    return export(ExportConfig(run_dir=str(run_dir), out_dir=str(out_dir), dtype=dtype, **options))


def export_adapter(
    adapter_dir: str | Path, base_model: str, out_dir: str | Path, dtype: str = "bf16", **options: Any
) -> ExportResult:
    """Export a bare adapter folder trained on ``base_model`` (alias, folder or hub id), without a run folder."""
    return export(
        ExportConfig(adapter_dir=str(adapter_dir), base_model=base_model, out_dir=str(out_dir), dtype=dtype, **options)
    )
