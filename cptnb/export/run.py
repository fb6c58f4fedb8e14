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

Merging and the reload check are in :mod:`cptnb.export.merge`, the card in
:mod:`cptnb.export.card`.

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
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cptnb.errors import ExportError
from cptnb.export.card import find_eval_files, write_model_card
from cptnb.export.config import ExportConfig, ExportResult, ReloadCheck, RunFacts
from cptnb.export.gguf import fail_message as gguf_failure
from cptnb.export.gguf import write_for_export as write_gguf
from cptnb.export.interpolation import write_interpolated_adapter
from cptnb.export.locate import locate
from cptnb.export.merge import write_merged

log = logging.getLogger(__name__)

CHECKPOINT_ONLY_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth")
OUTPUTS = ("adapter", "merged", "gguf", "README.md", "recipe.yaml", "export.json")


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


def _fail_check(check: ReloadCheck, result: ExportResult) -> None:
    if not check.reads_back_as_saved:
        raise ExportError(
            f"reload check failed: {result.merged_dir}, read back, differs from the model that was saved by up to "
            f"{check.saved_max_abs_diff:.4g} in logits (a faithful file gives 0): a tensor was lost or renamed on "
            f"save. Check the free disk space and the transformers version, then re-run the export; the numbers "
            f"are in {result.export_json}."
        )
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
        if cfg.interpolation_alpha != 1:
            write_interpolated_adapter(facts, cfg.interpolation_alpha, adapter_out)
    if facts.run_dir is not None and (facts.run_dir / "recipe.yaml").is_file():
        shutil.copy2(facts.run_dir / "recipe.yaml", out / "recipe.yaml")
    merged_dir, record, check, tying = None, {}, None, None
    if cfg.merge or adapter_out is None:  # a full run's only model is the merged one
        merged_dir = out / "merged"
        record, check, tying = write_merged(facts, cfg, merged_dir)
    gguf_files = write_gguf(facts, cfg, merged_dir, out / "gguf") if cfg.format == "gguf" and merged_dir else []
    result = ExportResult(
        out, out / "README.md", out / "export.json", adapter_out, merged_dir, check, tying, cfg.dtype, gguf_files
    )
    _write_export_json(result, facts, cfg, record)
    write_model_card(result, facts, cfg, eval_files)
    if check is not None:
        log.info("reload check: max |logit diff| %.3g (tolerance %.3g)", check.max_abs_diff, check.tolerance)
        if not check.passed:
            _fail_check(check, result)
    if gguf_failure(result.gguf, result.export_json):
        raise ExportError(gguf_failure(result.gguf, result.export_json))
    return result


def _write_export_json(result: ExportResult, facts: RunFacts, cfg: ExportConfig, merged: dict[str, Any]) -> None:
    import cptnb

    payload = {
        "cptnb_version": cptnb.__version__,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "method": facts.method,
        "interpolation_alpha": cfg.interpolation_alpha,  # 1: as trained; below 1: base + alpha * (trained - base)
        "dtype": cfg.dtype,
        "base_model": facts.base_name,
        "base_source": facts.base_source,
        "run_dir": str(facts.run_dir) if facts.run_dir else None,
        "trained_dir": str(facts.trained_dir),
        "adapter": str(result.adapter_dir) if result.adapter_dir else None,
        "merged": merged or None,
        "merged_into_full_precision_base": facts.method == "qlora" and bool(merged),
        "check": {**asdict(result.check), "passed": result.check.passed} if result.check else None,
        "gguf": [f.record() for f in result.gguf],
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
