"""The model card of an export: a Hugging Face README with provenance.

Front matter (base_model, language, license placeholder, tags), the base model,
method and recipe highlights, data sources with document counts and file hashes
(from :func:`cptnb.data.sources.file_manifest`), the decontamination result, the evaluation
tables found for the run, the reload check, limitations and how to load it.
Written by :func:`cptnb.export.export`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from cptnb.data.sources import data_manifest
from cptnb.errors import ExportError
from cptnb.export.config import ExportConfig, ExportResult, RunFacts
from cptnb.export.gguf import card_lines as gguf_card_lines
from cptnb.export.interpolation import card_lines as interpolation_card_lines
from cptnb.tables import markdown_table
from cptnb.vocab.adapter import card_lines as vocab_card_lines

log = logging.getLogger(__name__)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ExportError(f"{path}: cannot read JSON ({err}); re-create it or remove it") from None

# Hub ids of the kit's offline aliases, for the card's base_model (tiny-llama has none: it is random).
ALIAS_HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}
EVAL_FILE_NAMES = (
    "comparison.md",
    "comparison.json",
    "report.md",
    "results.json",
    "before_after.md",
    "before_after.json",
)
LICENSE_PLACEHOLDER = "TODO  # set a license compatible with the base model's and your data's before publishing"


def find_eval_files(given: list | tuple, run_dir: Path | None) -> list[Path]:
    """The evaluation files to embed: those given (each must exist), else the known names found in ``run_dir``.

    A ``.json`` is skipped when the ``.md`` of the same name is also there (same table, better formatted).
    """
    if given:
        files = [Path(p).expanduser() for p in given]
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise ExportError(
                f"evaluation file(s) not found: {', '.join(missing)}; pass results/comparison files written by "
                "cptnb evaluate, or leave eval_files empty"
            )
    elif run_dir is not None:
        files = [d / n for d in (run_dir, run_dir / "eval") for n in EVAL_FILE_NAMES if (d / n).is_file()]
    else:
        files = []
    names = {p.with_suffix("") for p in files if p.suffix == ".md"}
    return [p for p in files if not (p.suffix == ".json" and p.with_suffix("") in names)]


def _json_as_markdown(payload: Any) -> str:
    """A results/comparison JSON as a table when its shape is tabular, else as a (shortened) JSON block."""
    if isinstance(payload, dict):
        for key in ("comparison", "rows", "results"):
            if isinstance(payload.get(key), (list, dict)):
                return _json_as_markdown(payload[key])
    if isinstance(payload, list) and payload and all(isinstance(r, dict) for r in payload):
        header = list(dict.fromkeys(k for r in payload for k in r))
        return markdown_table(header, [[r.get(k, "") for k in header] for r in payload])
    if isinstance(payload, dict) and payload and all(isinstance(v, dict) for v in payload.values()):
        metrics = list(
            dict.fromkeys(k for v in payload.values() for k, x in v.items() if not isinstance(x, (dict, list)))
        )
        return markdown_table(
            ["task", *metrics], [[task, *[v.get(m, "") for m in metrics]] for task, v in payload.items()]
        )
    text = json.dumps(payload, indent=2, ensure_ascii=False)
    return "```json\n" + (text if len(text) < 4000 else text[:4000] + "\n...") + "\n```"


def _eval_section(files: list[Path]) -> list[str]:
    lines = ["## Evaluation", ""]
    if not files:
        return lines + [
            "No evaluation was run for this export (run `cptnb evaluate` and export again to embed it).",
            "",
        ]
    for path in files:
        lines += [f"From `{path.name}`:", ""]
        if path.suffix == ".json":
            lines.append(_json_as_markdown(read_json(path)))
        else:  # demote headings so the embedded report sits under this section
            text = path.read_text(encoding="utf-8").strip()
            lines.append("\n".join("##" + line if line.startswith("#") else line for line in text.splitlines()))
        lines.append("")
    return lines


def _base_hub_id(facts: RunFacts) -> str | None:
    if facts.base_name in ALIAS_HUB_IDS:
        return ALIAS_HUB_IDS[facts.base_name]
    looks_like_hub_id = facts.base_name.count("/") == 1 and not Path(facts.base_name).exists()
    return facts.base_name if looks_like_hub_id else None


def _languages(facts: RunFacts, cfg: ExportConfig) -> list[str]:
    if cfg.language:
        return list(cfg.language)
    if facts.recipe is None:
        return []
    data = facts.recipe.data
    return [data.language] + (
        [data.replay_language] if data.replay_sources and data.replay_language != data.language else []
    )


def _front_matter(result: ExportResult, facts: RunFacts, cfg: ExportConfig) -> str:
    import yaml

    meta: dict[str, Any] = {}
    hub_id = _base_hub_id(facts)
    if hub_id:
        meta["base_model"] = hub_id
    if _languages(facts, cfg):
        meta["language"] = _languages(facts, cfg)
    meta["library_name"] = "transformers" if result.merged_dir else "peft"
    meta["pipeline_tag"] = "text-generation"
    meta["tags"] = ["cptnb", "continued-pretraining", facts.method] + _languages(facts, cfg)
    license_line = f"license: {cfg.license}" if cfg.license else f"license: {LICENSE_PLACEHOLDER}"
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + license_line + "\n---\n"


def _base_section(facts: RunFacts) -> list[str]:
    lines = [
        "## Base model",
        "",
        f"- `{facts.base_name}`" + (f" (hub id `{_base_hub_id(facts)}`)" if _base_hub_id(facts) else ""),
    ]
    built = Path(facts.base_source) / "cptnb_source.json"
    if built.is_file():
        origin = read_json(built)
        if "gguf" in origin:
            lines.append(
                f"- rebuilt by cptnb as a dense float32 model from `{Path(origin['gguf']).name}` "
                f"(sha256 `{origin.get('gguf_sha256', '?')}`); its weights carry that file's 4-bit rounding"
            )
    if facts.base_name == "tiny-llama":
        lines.append("- a 2-layer randomly initialised Llama built by cptnb for tests: its outputs are meaningless")
    return lines + [""]


def _method_section(facts: RunFacts) -> list[str]:
    lines = ["## Training", ""]
    recipe, ac = facts.recipe, facts.adapter_config
    names = {"lora": "LoRA", "qlora": "QLoRA (LoRA on a 4-bit NF4 base)", "full": "full fine-tuning of every weight"}
    lines.append(
        f"- method: {names.get(facts.method, facts.method)}, continued pretraining (next-token loss on raw text)"
    )
    if facts.method == "qlora":
        lines.append(
            "- the adapter trained against 4-bit base weights; `merged/` folds it into the base reloaded in full "
            "precision, so its outputs differ slightly from the 4-bit model used in training"
        )
    if facts.method != "full":
        rank, alpha = ac.get("r"), ac.get("lora_alpha")
        rs = " (rsLoRA scaling)" if ac.get("use_rslora") else ""
        lines.append(
            f"- LoRA rank {rank}, alpha {alpha}{rs}, targets: {', '.join(sorted(ac.get('target_modules') or []))}"
        )
        if ac.get("modules_to_save"):
            # PEFT lists a module under several paths, e.g. embed_tokens and model.embed_tokens.
            full = sorted({name.rsplit(".", 1)[-1] for name in ac["modules_to_save"]})
            tied = " (tied to lm_head)" if ac.get("ensure_weight_tying") and full == ["embed_tokens"] else ""
            lines.append(f"- trained in full: {', '.join(full)}{tied}")
    if recipe is not None:
        t, m = recipe.train, recipe.model
        block = recipe.data.block_tokens or m.max_seq_len_tokens
        steps = facts.steps if facts.steps is not None else t.max_steps
        per_step = block * t.per_device_batch_size * t.gradient_accumulation_steps
        lines += [
            f"- learning rate {t.learning_rate:g} ({t.lr_scheduler}, warmup "
            f"{f'{t.warmup_steps} steps' if t.warmup_steps else f'{t.warmup_ratio:.0%} of steps'}, floor "
            f"{t.min_lr_ratio:g}x)"
            + (f", embeddings {t.effective_embedding_learning_rate:g}" if m.train_embeddings else ""),
            (
                f"- {steps} optimizer steps of {t.per_device_batch_size} x {t.gradient_accumulation_steps} "
                f"blocks of {block} tokens "
                f"= about {steps * per_step:,} tokens seen per device (multiply by the number of GPUs)"
            ),
            f"- precision {t.precision}, seed {t.seed}; the full recipe is in `recipe.yaml`",
        ]
    return lines + [""]


def _data_sections(facts: RunFacts) -> list[str]:
    data = facts.recipe.data if facts.recipe is not None else None
    return [
        "## Training data",
        "",
        *corpus_markdown(facts.report, data),
        "",
        "## Decontamination",
        "",
        *decontamination_markdown(facts.report, data),
        "",
    ]


EMBEDDING_STATES = {
    "tied": "embed_tokens and lm_head tied",
    "separate": "embed_tokens and lm_head stored separately",
    "untied": "embed_tokens and lm_head trained apart, so untied by the export",
}


def _check_section(result: ExportResult) -> list[str]:
    lines = ["## Export check", ""]
    check = result.check
    if result.merged_dir is None:
        return lines + ["No merged model was written (merge=False); load the adapter on the base model.", ""]
    if check is None:
        return lines + ["The reload check was skipped (check=False).", ""]
    effect = (
        f"; the adapter itself moves the base model's logits by up to {check.adapter_effect_max_abs:.4g}"
        if check.adapter_effect_max_abs is not None
        else ""
    )
    lines.append(
        f"`merged/` ({check.dtype} on disk; {EMBEDDING_STATES.get(result.tied_embeddings or '', '')}) was reloaded "
        f"with plain transformers and compared with the trained model on {check.texts} fixed texts "
        f"({check.tokens} positions): max |logit difference| "
        f"{check.max_abs_diff:.4g} (tolerance {check.tolerance:.4g}), mean {check.mean_abs_diff:.3g}, same top-1 "
        f"token at {check.top1_agreement:.1%} of positions{effect}.{_saved(check)} "
        f"{'Passed' if check.passed else 'FAILED'}."
    )
    return lines + [""]


def _saved(check) -> str:
    if check.saved_max_abs_diff is None:
        return ""
    same = "bit-identical" if check.saved_max_abs_diff == 0 else f"within {check.saved_max_abs_diff:.3g}"
    return f" Read back, the file gives the logits of the merged model as it was saved, {same}."


def _limitations() -> list[str]:
    return [
        "## Intended use and limitations",
        "",
        (
            "- A research and teaching artifact: a base model continued-pretrained on a small corpus to study "
            "adaptation to a new language or domain. It is not instruction-tuned or aligned: it continues text, "
            "does not follow instructions, and can produce false, biased or offensive text."
        ),
        (
            "- A short run on a small corpus changes fluency in the target language more than knowledge; check the "
            "evaluation above, including general-language retention, before relying on it."
        ),
        (
            "- It inherits the base model's license, limitations and biases; do not deploy it in products or for "
            "decisions about people without further training, evaluation and safety review."
        ),
        "",
    ]


def _how_to_load(result: ExportResult, facts: RunFacts) -> list[str]:
    lines = ["## How to load", ""]
    if result.merged_dir is not None:
        lines += [
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder/merged")',
            'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder/merged")',
            'ids = tokenizer("Hà Nội là", return_tensors="pt").input_ids',
            "print(tokenizer.decode(model.generate(ids, max_new_tokens=30)[0]))",
            "```",
            "",
        ]
    if result.adapter_dir is not None:
        base = _base_hub_id(facts) or facts.base_name
        lines += [
            "The adapter alone, on its base model (needs `peft`):",
            "",
            "```python",
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM",
            f'base = AutoModelForCausalLM.from_pretrained("{base}")'
            + (
                ""
                if _base_hub_id(facts)
                else "  # a cptnb alias or local folder: cptnb.models.loading.resolve_source gives its path"
            ),
            'model = PeftModel.from_pretrained(base, "path/to/this/folder/adapter")',
            "```",
            "",
        ]
    if (result.out_dir / "recipe.yaml").is_file():
        lines += [
            "Reproduce the run: `cptnb train --config recipe.yaml` (same data files: compare the hashes above).",
            "",
        ]
    return lines


def write_model_card(result: ExportResult, facts: RunFacts, cfg: ExportConfig, eval_files: list[Path]) -> Path:
    """Write ``result.out_dir/README.md``, a Hugging Face model card with the run's provenance; return its path."""
    alpha = cfg.interpolation_alpha
    how = facts.method if alpha == 1 else f"{facts.method}, interpolated toward the base at alpha {alpha:g}"
    title = f"# {result.out_dir.resolve().name}: {facts.base_name} continued-pretrained ({how})"
    sections = [
        _front_matter(result, facts, cfg),
        title,
        "",
        (
            "Exported with cptnb, a continued-pretraining kit. Every number below was read from the run's files "
            "when this card was written."
        ),
        "",
        *_base_section(facts),
        *_method_section(facts),
        *interpolation_card_lines(cfg.interpolation_alpha, facts.method, facts.adapter_config),
        *vocab_card_lines(facts.trained_dir, facts.run_dir),
        *_data_sections(facts),
        *_eval_section(eval_files),
        *_check_section(result),
        *gguf_card_lines(result.gguf, result.out_dir),
        *_limitations(),
        *_how_to_load(result, facts),
    ]
    if not cfg.license:
        log.warning("the model card's license is a placeholder: set it in %s before publishing", result.card)
    result.card.write_text("\n".join(sections), encoding="utf-8")
    return result.card


# --- the corpus in the card -----------------------------------------------------------------------------


def corpus_markdown(report: dict | None, data_cfg=None) -> list[str]:
    """Lines describing a corpus ``report.json``: documents per source and drop reason, tokens, dedup, file hashes.

    File hashes come from the report's ``source_files`` (recorded when the corpus
    was prepared); older reports lack them, and then ``data_cfg``'s files are hashed now.
    """
    if not report:
        return ["No corpus report was found (`data/report.json`); the training data is not documented here."]
    if report.get("source_files"):
        files, how = report["source_files"], "recorded when the corpus was prepared"
    else:
        files = data_manifest(data_cfg) if data_cfg is not None else []
        how = "computed at export time (the files may have changed since training)"
    roles = {Path(f["path"]).resolve(): f.get("role", "") for f in files}
    rows = [
        [Path(src).name, roles.get(Path(src).resolve(), ""), e["docs_in"], e["docs_kept"], e["dropped"] or "none"]
        for src, e in report.get("sources", {}).items()
    ]
    total = report.get("total", {})
    rows.append(["**total**", "", total.get("docs_in", ""), total.get("docs_kept", ""), total.get("dropped") or "none"])
    lines = [
        "Documents per source (dropped by reason):",
        "",
        markdown_table(["source", "role", "docs in", "kept", "dropped"], rows),
        "",
    ]
    tokens = report.get("tokens", {})
    if tokens:
        lines.append(
            f"Packed into {tokens.get('blocks', 0):,} blocks of {tokens.get('block_size', '?')} tokens "
            f"({tokens.get('tokens_packed', 0):,} tokens; replay share {tokens.get('replay_share_achieved', 0):.1%}, "
            f"target {tokens.get('replay_share_target', 0):.0%}; {tokens.get('tokens_per_word', '?')} tokens per word)."
        )
    for side, d in (report.get("dedup") or {}).items():
        if d.get("docs_in"):
            lines.append(
                f"Deduplication ({side}): {d['exact_duplicates']} exact and "
                f"{d['near_duplicates']} near duplicates removed."
            )
    if files:
        table = [[f["path"], f.get("role", ""), f["bytes"], f"`{f['sha256']}`"] for f in files]
        lines += ["", f"Files, with SHA-256 {how}:", "", markdown_table(["file", "role", "bytes", "sha256"], table)]
    return lines


def decontamination_markdown(report: dict | None, data_cfg=None) -> list[str]:
    """Lines saying whether training text was checked against the evaluation tasks, and what was removed."""
    if data_cfg is None or report is None:
        return ["Unknown: no recipe or corpus report came with this export."]
    if not data_cfg.eval_tasks or not data_cfg.decontam.enabled:
        return [
            "Not run: no evaluation task files were given (`data.eval_tasks`), so evaluation scores may be inflated."
        ]
    dropped = report.get("total", {}).get("dropped", {}).get("contaminated", 0)
    hits = (report.get("decontamination") or {}).get("files_hit", {})
    lines = [
        (
            f"Training documents sharing a {data_cfg.decontam.ngram_words}-word sequence with the evaluation items "
            f"in {', '.join(map(str, data_cfg.eval_tasks))} were removed: {dropped} document(s)."
        )
    ]
    if hits:
        lines += ["", markdown_table(["evaluation file", "documents matched"], [[k, v] for k, v in hits.items()])]
    return lines
