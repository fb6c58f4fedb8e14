"""Weight interpolation between a base model and its continued-pretrained version ("roll back by degree").

``theta(alpha) = theta_base + alpha * (theta_trained - theta_base)``: alpha 1 is
the trained model, 0 the base, values between give up part of what training
changed (WiSE-FT, arXiv 2109.01903). How the change is scaled depends on the run:

- **LoRA / QLoRA**: the adapter's contribution is ``scaling * B @ A``; PEFT's
  :func:`peft.helpers.rescale_adapter_scale` (temporary) and
  ``LoraLayer.scale_layer`` (permanent, for an export) multiply ``scaling`` by
  alpha, which is exactly the interpolation of every LoRA-adapted weight. Modules
  trained in full beside the adapter (``modules_to_save``: the embeddings and
  lm_head when ``train_embeddings``) are interpolated here with ``torch.lerp``
  between PEFT's untouched original and the trained copy; PEFT has no scale for them.
- **full**: every parameter is ``torch.lerp(base, trained, alpha)``, from a base
  model (or its state dict) with the same parameter names.

``torch.lerp`` returns ``start`` exactly at weight 0 and ``end`` exactly at
weight 1, and a LoRA scale of 0 adds exact zeros, so alpha 0 reproduces the
base model's logits and alpha 1 the trained model's bit for bit (with the same
dtypes: trained copies are float32 under bf16 training, see
:func:`cptnb.models.loading.train_in_fp32`).

Example::

    with interpolated(loaded.model, 0.5):          # a LoRA model: no base needed
        measure(loaded.model, loaded.tokenizer, heldout)
    with interpolated(full_model, 0.5, base=base_model):
        ...
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cptnb.errors import ConfigError, CptnbError


class InterpolationError(CptnbError):
    """The model cannot be interpolated as asked (no adapter and no base, mismatched parameters)."""


def check_alpha(alpha: Any, where: str = "alpha") -> float:
    """``alpha`` as a float, or a :class:`~cptnb.errors.ConfigError` saying what a valid one is."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise ConfigError([f"{where} must be a finite number (0 = base model, 1 = trained model), got {alpha!r}"],
                          where)
    return float(alpha)


def lora_layers(model) -> list:
    """Every PEFT ``LoraLayer`` in ``model`` (empty for a plain transformers model)."""
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def _trained_copies(model) -> list[tuple[Any, Any]]:
    """(trained parameter, its untouched base parameter) for every module PEFT trains in full (modules_to_save).

    A tied lm_head shares its tensor with embed_tokens, so each tensor is listed once.
    """
    from peft.utils.other import AuxiliaryTrainingWrapper, ModulesToSaveWrapper

    pairs, seen = [], set()
    for name, wrapper in model.named_modules():
        if not isinstance(wrapper, AuxiliaryTrainingWrapper):
            continue
        if not isinstance(wrapper, ModulesToSaveWrapper):
            raise InterpolationError(f"{name} is a {type(wrapper).__name__}; only LoRA layers and modules_to_save "
                                     "(fully trained modules) can be interpolated")
        original = dict(wrapper.original_module.named_parameters())
        for adapter in wrapper.active_adapters:
            if adapter not in wrapper.modules_to_save:
                continue
            for pname, param in wrapper.modules_to_save[adapter].named_parameters():
                if id(param) not in seen:
                    seen.add(id(param))
                    pairs.append((param, original[pname]))
    return pairs


def _full_pairs(model, base) -> list[tuple[Any, Any]]:
    """(trained parameter, base tensor) by name; ``base`` is a model or a state dict with the same names."""
    base_state = base if isinstance(base, dict) else dict(base.named_parameters())
    pairs, seen, missing, shapes = [], set(), [], []
    for name, param in model.named_parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        if name not in base_state:
            missing.append(name)
        elif tuple(base_state[name].shape) != tuple(param.shape):
            shapes.append(f"{name} {tuple(param.shape)} vs base {tuple(base_state[name].shape)}")
        else:
            pairs.append((param, base_state[name]))
    if missing or shapes:
        detail = "; ".join([*(f"missing in base: {n}" for n in missing[:3]), *shapes[:3]])
        raise InterpolationError(f"the base model does not match the trained model ({detail}); pass the model the run "
                                 "started from (with the same vocabulary size)")
    return pairs


def _pairs(model, base) -> tuple[list, list[tuple[Any, Any]]]:
    """(LoRA layers to scale, (trained, base) tensor pairs to lerp) for ``model``."""
    layers = lora_layers(model)
    if layers:
        if base is not None:
            raise InterpolationError("a LoRA model carries its base inside; interpolate it without base=")
        return layers, _trained_copies(model)
    if base is None:
        raise InterpolationError("a model without LoRA layers (a full run) needs base= the model it started from")
    return [], _full_pairs(model, base)


def _lerp_into(pairs: list[tuple[Any, Any]], trained: list, alpha: float) -> None:
    import torch

    with torch.no_grad():
        for (param, base), values in zip(pairs, trained, strict=True):
            start = base.detach().to(device=values.device, dtype=values.dtype)
            param.copy_(torch.lerp(start, values, alpha))


@contextmanager
def interpolated(model, alpha: float, base=None) -> Iterator[Any]:
    """Inside the block ``model`` is ``theta_base + alpha * (theta_trained - theta_base)``; restored exactly after.

    ``model`` is a PEFT LoRA model (``base`` None: its base weights are inside it)
    or a fully trained model with ``base`` the model (or state dict) it started
    from. Fully trained tensors are copied once on entry (memory: one more copy
    of them) and written back on exit.
    """
    import torch
    from peft.helpers import rescale_adapter_scale

    alpha = check_alpha(alpha)
    layers, pairs = _pairs(model, base)
    saved = [param.detach().clone() for param, _ in pairs]
    try:
        _lerp_into(pairs, saved, alpha)
        if layers:
            with rescale_adapter_scale(model, alpha):
                yield model
        else:
            yield model
    finally:
        with torch.no_grad():
            for (param, _), values in zip(pairs, saved, strict=True):
                param.copy_(values)


def interpolate_in_place(model, alpha: float, base=None):
    """Like :func:`interpolated`, but for good (an export): LoRA scales multiplied by alpha, tensors lerped.

    A LoRA model saved afterwards with PEFT keeps its config's ``lora_alpha``, so
    the exporter also multiplies that (see :func:`scaled_lora_config`). Returns ``model``.
    """
    alpha = check_alpha(alpha)
    layers, pairs = _pairs(model, base)
    _lerp_into(pairs, [param.detach().clone() for param, _ in pairs], alpha)
    for layer in layers:
        layer.scale_layer(alpha)  # PEFT's own: scaling of each active adapter times alpha
    return model


def scaled_lora_config(adapter_config: dict[str, Any], alpha: float) -> dict[str, Any]:
    """An ``adapter_config.json`` whose LoRA scale is ``alpha`` times the original's.

    PEFT computes ``scaling = lora_alpha / r`` (``/ sqrt(r)`` with rsLoRA), so
    multiplying ``lora_alpha`` and every ``alpha_pattern`` value by alpha scales
    each adapted layer's change by alpha and nothing else.
    """
    alpha = check_alpha(alpha)
    scaled = dict(adapter_config)
    scaled["lora_alpha"] = adapter_config["lora_alpha"] * alpha
    scaled["alpha_pattern"] = {k: v * alpha for k, v in (adapter_config.get("alpha_pattern") or {}).items()}
    return scaled
