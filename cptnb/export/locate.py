"""Find what an export starts from: the trained adapter or full model, its base, the recipe and the data report."""

from __future__ import annotations

from pathlib import Path

from cptnb.errors import ExportError, ModelNotAvailableError
from cptnb.export.card import read_json
from cptnb.export.config import ExportConfig, RunFacts
from cptnb.train.checkpoints import list_checkpoints
from cptnb.train.monitor import last_logged_step


def _base_from_name(name: str, recipe_model=None) -> str:
    from cptnb.config import ModelConfig
    from cptnb.models.loading import resolve_source

    model_cfg = recipe_model if recipe_model is not None and recipe_model.name == name else ModelConfig(name=name)
    return resolve_source(model_cfg)


def trained_model_in(run_dir: str | Path) -> Path | None:
    """The final ``adapter/`` (LoRA, QLoRA) or ``model/`` (full) folder of a training run, or None while it has none.

    Example::

        if trained_model_in("runs/02_train") is None:
            run_recipe(recipe)  # train first, then export
    """
    run_dir = Path(run_dir)
    if (run_dir / "adapter" / "adapter_config.json").is_file():
        return run_dir / "adapter"
    if (run_dir / "model" / "config.json").is_file():
        return run_dir / "model"
    return None


def _trained_in_run(run_dir: Path) -> Path:
    """The run's final adapter/ or model/ folder, or an error saying how to get one."""
    found = trained_model_in(run_dir)
    if found is not None:
        return found
    checkpoints = [p.name for p in list_checkpoints(run_dir)]
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
        steps = last_logged_step(run_dir / "metrics.jsonl")
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

