"""Fold an adapter into its base in full precision, save it, and check the reload against the trained model.

The reload check loads ``merged/`` with plain transformers, upcast to float32 so
that only the exported weights differ, and compares its logits on a few fixed
texts with those of the base model + adapter (or the trained full model). It fails
when the largest difference exceeds ``CHECK_TOLERANCE[dtype] * max(1, largest
reference logit)``: rounding error grows with the logits' scale and with the
dtype's unit roundoff (fp32 2^-24, fp16 2^-11, bf16 2^-8). On SmolLM2-135M with
a trained adapter the measured ratios were about 3e-6 (fp32), 1.2e-3 (fp16) and
8e-3 (bf16), each well under its limit (1e-5, 4e-3, 3e-2). An absolute 1e-5 cannot be
asked of fp32 at SmolLM2's logits of 25-35: base + adapter in fp32 is itself about
1e-4 from the same model in float64 (benchmarks/merge_precision.py).

An fp32 export is also compared with the merged model as it was saved: a faithful
file reads back bit-identical, so any difference there (allowed:
``ROUNDTRIP_TOLERANCE``, 1e-5) is a save problem, not rounding.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cptnb.data.sources import file_manifest
from cptnb.errors import ConfigError, ExportError
from cptnb.export.config import ExportConfig, ReloadCheck, RunFacts

log = logging.getLogger(__name__)

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




def torch_dtype(name: str):
    """torch dtype of an export dtype name (bf16, fp16, fp32, or an alias such as bfloat16)."""
    from cptnb.models.loading import torch_dtype as to_torch

    try:
        return to_torch(name)
    except ConfigError as err:
        raise ConfigError(err.problems, "export") from None


def _load_full_precision(source: str):
    """A model in float32, never quantized: a QLoRA adapter is merged into full-precision base weights."""
    import torch
    from transformers import AutoModelForCausalLM

    from cptnb.models.loading import from_pretrained_or_explain

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

    from cptnb.vocab.adapter import fit_base_to_adapter

    base = _load_full_precision(base_source)
    fit_base_to_adapter(base, adapter_dir)  # an adapter with an extended vocabulary needs the rows it trained
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
    merged_dir: str | Path, reference_logits: list, encoded: list, dtype: str, adapter_effect=None, saved_logits=None
) -> ReloadCheck:
    """Load ``merged_dir`` with plain transformers (float32) and compare its logits with ``reference_logits``.

    ``saved_logits`` (an fp32 merged model's, taken just before it was saved) adds the round-trip comparison.
    """
    reloaded = _logits(_load_full_precision(str(merged_dir)), encoded)
    check = compare_logits(reference_logits, reloaded, dtype, adapter_effect)
    if saved_logits is not None:
        check.saved_max_abs_diff = compare_logits(saved_logits, reloaded, dtype).max_abs_diff
    return check



def _tokenizer_for(facts: RunFacts):
    from transformers import AutoTokenizer

    from cptnb.models.loading import from_pretrained_or_explain

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


def _merged_and_reference(facts: RunFacts, dtype: str, encoded: list, alpha: float = 1.0):
    """(merged model in ``dtype``, float32 reference logits, adapter effect or None, embedding state).

    ``alpha`` < 1 exports ``base + alpha * (trained - base)`` (:mod:`cptnb.models.interpolate`); the reference
    logits are those of the interpolated model before merging, so the reload check covers the interpolation's merge.
    """
    from cptnb.models.interpolate import interpolate_in_place

    if facts.method == "full":
        model = _load_full_precision(str(facts.trained_dir))
        if alpha != 1:
            interpolate_in_place(model, alpha, base=_load_full_precision(facts.base_source))
        reference = _logits(model, encoded)
        tying = settle_tied_embeddings(model)
        return model.to(torch_dtype(dtype)), reference, None, tying
    adapted = load_adapted(facts.base_source, facts.trained_dir)
    if alpha != 1:
        interpolate_in_place(adapted, alpha)
    reference = _logits(adapted, encoded)
    with adapted.disable_adapter():
        effect = max(float((r - b).abs().max()) for r, b in zip(reference, _logits(adapted, encoded), strict=True))
    if effect == 0.0 and alpha != 0:
        log.warning("the adapter does not change the base model's logits: was it trained?")
    model, tying = merge_loaded(adapted, dtype)
    return model, reference, effect, tying


def write_merged(facts: RunFacts, cfg: ExportConfig, merged_dir: Path):
    """Save the merged model into ``merged_dir``; return (export.json record, reload check or None, embedding state)."""
    tokenizer = _tokenizer_for(facts)
    encoded = _encode(tokenizer, CHECK_TEXTS)
    model, reference, effect, tying = _merged_and_reference(facts, cfg.dtype, encoded, cfg.interpolation_alpha)
    _save_merged(model, tokenizer, merged_dir, tying)
    # An fp32 file must read back as exactly the model saved. (A bf16 model in memory is no such reference: its
    # rotary buffers were cast too, while a reload recomputes them in float32.)
    saved_logits = _logits(model, encoded) if cfg.check and cfg.dtype == "fp32" else None
    del model  # the reload below should not hold two copies in memory
    check = reload_check(merged_dir, reference, encoded, cfg.dtype, effect, saved_logits) if cfg.check else None
    return _merged_record(merged_dir, tying), check, tying


