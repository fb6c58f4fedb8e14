"""The shape of a model (parameter counts, layers, sizes) from a loaded model or its config on the meta device."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from cptnb.config import ModelConfig
from cptnb.errors import ConfigError
from cptnb.models.loading import LoadedModel

log = logging.getLogger(__name__)

# Module names whose inputs a decoder layer shares (Llama family: Llama, Mistral, Qwen2/3, SmolLM, Gemma).
ATTN_IN, ATTN_OUT = ("q_proj", "k_proj", "v_proj"), ("o_proj",)
MLP_IN, MLP_OUT = ("gate_proj", "up_proj"), ("down_proj",)
KNOWN_LAYOUTS = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2", "granite", "phi3")


@dataclass
class ModelShape:
    """What the planner needs to know about a model: parameter counts and layer sizes, no weights."""

    name: str  # model.name from the recipe, or the loaded source
    model_type: str  # config.model_type, e.g. "llama"
    total_params: int  # parameters of the base model, a tied lm_head counted once
    embedding_params: int  # embed_tokens, plus lm_head when untied
    quantizable_params: int  # parameters in linear layers other than lm_head (what QLoRA stores in 4 bits)
    linear_shapes: dict[str, list[tuple[int, int]]]  # leaf name -> [(in_features, out_features)] for LoRA targets
    largest_layer_params: int  # one decoder layer (what FSDP / ZeRO-3 gathers at a time)
    hidden_size: int  # width of the residual stream
    intermediate_size: int  # width of the MLP
    num_layers: int  # decoder layers
    num_heads: int  # query heads
    num_kv_heads: int  # key/value heads (fewer than num_heads with grouped-query attention)
    head_dim: int  # width of one head
    vocab_size: int  # rows of the embedding matrix and columns of the logits
    tie_word_embeddings: bool  # lm_head shares embed_tokens' weight
    attn_implementation: str  # eager | sdpa | flash_attention_2 ...; eager stores the seq x seq scores
    max_position_embeddings: int  # longest sequence the position encoding was trained for


def _numel(p) -> int:
    # bitsandbytes packs two 4-bit weights per byte; its quant_state remembers the real shape.
    state = getattr(p, "quant_state", None)
    return math.prod(state.shape) if state is not None else p.numel()


def shape_from_model(model, name: str) -> ModelShape:
    """Read a :class:`ModelShape` off a model (real, meta-device or PEFT-wrapped); adapters are not counted."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params: dict[int, tuple[str, Any]] = {}
    for pname, p in base.named_parameters(remove_duplicate=True):
        if "lora_" in pname or ".modules_to_save." in pname:  # PEFT additions, not the base model
            continue
        params.setdefault(id(p), (pname, p))
    total = sum(_numel(p) for _, p in params.values())
    # PEFT's modules_to_save wrapper keeps the base embedding as .original_module.
    wrapped = (base.get_input_embeddings(), base.get_output_embeddings())
    embed_modules = [getattr(m, "original_module", m) for m in wrapped]
    embed_ids = {id(m.weight) for m in embed_modules if m is not None}
    embedding = sum(_numel(p) for i, (_, p) in params.items() if i in embed_ids)
    linear_shapes: dict[str, list[tuple[int, int]]] = {}
    quantizable = 0
    for mname, module in base.named_modules():
        if not isinstance(module, torch.nn.Linear) or "lora_" in mname or "modules_to_save" in mname:
            continue
        mname = mname.removesuffix(".base_layer").removesuffix(".original_module")  # PEFT wrappers
        if mname.endswith("lm_head") or id(module.weight) in embed_ids:
            continue
        linear_shapes.setdefault(mname.rsplit(".", 1)[-1], []).append((module.in_features, module.out_features))
        quantizable += module.in_features * module.out_features
    layers = _decoder_layers(base)
    largest = max((sum(_numel(p) for p in layer.parameters()) for layer in layers), default=0)
    cfg = base.config
    heads = cfg.num_attention_heads
    return ModelShape(
        name=name,
        model_type=getattr(cfg, "model_type", "?"),
        total_params=total,
        embedding_params=embedding,
        quantizable_params=quantizable,
        linear_shapes=linear_shapes,
        largest_layer_params=largest,
        hidden_size=cfg.hidden_size,
        intermediate_size=getattr(cfg, "intermediate_size", 4 * cfg.hidden_size),
        num_layers=cfg.num_hidden_layers,
        num_heads=heads,
        num_kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
        head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
        vocab_size=cfg.vocab_size,
        tie_word_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
        attn_implementation=getattr(cfg, "_attn_implementation", None) or "eager",
        max_position_embeddings=getattr(cfg, "max_position_embeddings", 0) or 0,
    )


def _decoder_layers(model) -> list:
    import torch

    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    return list(max(lists, key=len)) if lists else []


def model_shape(model: ModelConfig | LoadedModel | ModelShape) -> ModelShape:
    """The :class:`ModelShape` of a loaded model, or of ``ModelConfig.name`` built on the meta device (no weights).

    A hub id is read from the Hub or its local cache; when neither has it, its
    shape shipped with the kit (:mod:`cptnb.planner.known_shapes`) is used, and
    otherwise :class:`~cptnb.errors.ModelNotAvailableError` says how to get it.
    """
    if isinstance(model, ModelShape):
        return model
    if isinstance(model, LoadedModel):
        return shape_from_model(model.model, model.source)
    from cptnb.planner.known_shapes import config_for

    config, _ = config_for(model.name, model.trust_remote_code, model.cache_dir, model.seed)
    return shape_from_config(config, model.name, model.trust_remote_code)


def shape_from_config(config, name: str, trust_remote_code: bool = False) -> ModelShape:
    """The :class:`ModelShape` of a transformers config, counted on a model built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # every tensor gets a shape but no storage: an 8B model costs nothing
        empty = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    empty.tie_weights()  # a tied lm_head must be counted once
    return shape_from_model(empty, name)


def lora_targets(shape: ModelShape, cfg: ModelConfig) -> list[str]:
    if cfg.target_modules == "all-linear":
        return sorted(shape.linear_shapes)
    missing = [t for t in cfg.target_modules if t not in shape.linear_shapes]
    if missing:
        choices = ", ".join(sorted(shape.linear_shapes))
        raise ConfigError([f"target_modules {missing} are not linear layers of {shape.name}; choose from {choices}"],
                          "model")
    return list(cfg.target_modules)


def trainable_params(shape: ModelShape, cfg: ModelConfig, method: str | None = None) -> tuple[int, int]:
    """Parameters ``method`` trains: (LoRA adapters, embedding copies), or (all parameters, 0) for full.

    LoRA adds r x (in + out) per targeted linear layer; ``train_embeddings``
    trains a copy of embed_tokens (and of lm_head when untied).
    """
    method = method or cfg.method
    if method == "full":
        return shape.total_params, 0
    adapters = sum(cfg.lora_rank * (i + o) for t in lora_targets(shape, cfg) for i, o in shape.linear_shapes[t])
    return adapters, shape.embedding_params if cfg.train_embeddings else 0
