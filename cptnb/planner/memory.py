"""Memory per device for LoRA, QLoRA and full training: weights, gradients, optimizer state, activations, logits."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from cptnb.config import METHODS, ModelConfig, Recipe
from cptnb.configbase import BYTES_PER_VALUE
from cptnb.errors import ConfigError
from cptnb.models.loading import LoadedModel, cuda_available
from cptnb.planner.shape import (
    ATTN_IN,
    ATTN_OUT,
    KNOWN_LAYOUTS,
    MLP_IN,
    MLP_OUT,
    ModelShape,
    lora_targets,
    model_shape,
    trainable_params,
)

log = logging.getLogger(__name__)

GiB = 2**30
OOM_SHARE = 0.9  # warn above this share of available memory: allocator and library spikes eat the rest
FRAGMENTATION_MARGIN = 0.10  # the caching allocator rarely packs tensors perfectly
RUNTIME_OVERHEAD_BYTES = {"cuda": 0.5 * GiB, "cpu": 0.5 * GiB}  # CUDA context + cuBLAS workspace / interpreter + torch
# bitsandbytes NF4 with double quantization: 4 bits per weight, one 8-bit absmax per 64 weights, and one fp32
# constant per 256 of those blocks (QLoRA paper, section 3: 0.127 bits per parameter of constants).
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)
# TRL's chunked LM-head loss projects at most this many tokens x vocabulary entries at once (trl.kernels).
FUSED_LOSS_TILE = (4096, 32768)

# optimizer name (as transformers' TrainingArguments.optim knows it) -> (states per trainable parameter,
# bytes per state; None means "the dtype of the parameter the optimizer updates", as torch optimizers do).
OPTIMIZER_STATES: dict[str, tuple[int, float | None]] = {
    **dict.fromkeys(
        ["adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adamw_anyprecision",
         "stable_adamw", "grokadamw", "schedule_free_adamw", "schedule_free_radam"], (2, None)),
    **dict.fromkeys(["adamw_bnb_8bit", "adamw_8bit", "paged_adamw_8bit", "adamw_torch_8bit"], (2, 1)),
    "adamw_torch_4bit": (2, 0.5),
    "paged_adamw_32bit": (2, 4),
    "ademamix": (3, None),
    **dict.fromkeys(["ademamix_8bit", "paged_ademamix_8bit"], (3, 1)),
    "paged_ademamix_32bit": (3, 4),
    **dict.fromkeys(["lion_8bit", "paged_lion_8bit", "rmsprop_bnb_8bit"], (1, 1)),
    **dict.fromkeys(["lion_32bit", "paged_lion_32bit", "rmsprop_bnb", "rmsprop_bnb_32bit"], (1, 4)),
    **dict.fromkeys(["adagrad", "rmsprop", "schedule_free_sgd"], (1, None)),
    # SGD without momentum (transformers' default) keeps nothing; Adafactor and LOMO keep O(rows + cols) or nothing.
    **dict.fromkeys(["sgd", "adafactor", "lomo", "adalomo"], (0, None)),
}


@dataclass
class MemoryEstimate:
    """Estimated peak memory of one device for one method and multi-device strategy, in bytes."""

    method: str  # lora | qlora | full
    strategy: str  # single | ddp | fsdp | zero0..zero3
    num_devices: int  # devices the run is spread over
    trainable_params: int  # parameters the optimizer updates
    weights_bytes: float  # model weights held on this device (sharded under FSDP / ZeRO-3)
    master_weights_bytes: float  # fp32 copy of the trainable weights kept by DeepSpeed in mixed precision
    gradients_bytes: float  # gradients of trainable weights (plus DDP's bucket copy)
    optimizer_bytes: float  # optimizer state, e.g. AdamW's two moments
    activations_bytes: float  # tensors saved for backward: every layer's, or per-layer checkpoints
    recompute_bytes: float  # gradient checkpointing: the one layer rebuilt during backward (else 0)
    logits_bytes: float  # fp32 logits, the loss's log-softmax and its gradient
    overhead_bytes: float  # CUDA context / interpreter and libraries
    margin_bytes: float = 0.0  # fragmentation margin on top of the rest
    notes: list[str] = field(default_factory=list)  # assumptions that shaped this estimate

    def __post_init__(self) -> None:
        if not self.margin_bytes:
            self.margin_bytes = FRAGMENTATION_MARGIN * self.subtotal_bytes

    @property
    def peak_activation_bytes(self) -> float:
        """Saved activations plus the larger working set: the recomputed layer and the logits never overlap."""
        if self.recompute_bytes:
            return self.activations_bytes + max(self.recompute_bytes, self.logits_bytes)
        return self.activations_bytes + self.logits_bytes

    @property
    def subtotal_bytes(self) -> float:
        return self.model_state_bytes + self.peak_activation_bytes + self.overhead_bytes

    @property
    def total_bytes(self) -> float:
        return self.subtotal_bytes + self.margin_bytes

    @property
    def model_state_bytes(self) -> float:
        """Weights, master copy, gradients and optimizer state: what the method itself decides."""
        return self.weights_bytes + self.master_weights_bytes + self.gradients_bytes + self.optimizer_bytes

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_bytes": self.total_bytes}


@dataclass
class Hardware:
    """What the run will execute on (not necessarily this machine)."""

    device: str  # cuda | cpu
    num_devices: int  # data-parallel workers
    precision: str  # bf16 | fp16 | fp32: compute dtype of the forward/backward pass
    weight_bytes: int  # bytes per parameter as loaded (model.dtype)
    fused_loss: bool = False  # TRL's chunked LM-head loss runs (CUDA + Triton), so full logits never exist


def resolve_hardware(recipe: Recipe, device: str = "auto", num_devices: int | None = None) -> Hardware:
    """Target device, device count, precision and weight dtype; "auto" means this machine.

    Planning for a GPU from a CPU machine (``device="cuda"``) assumes bf16 where
    the recipe says auto (fp16 on older GPUs has the same size) and Triton
    (shipped with PyTorch's Linux CUDA builds), hence TRL's chunked loss.
    """
    from cptnb.models.loading import resolve_dtype
    from cptnb.train.trainer import resolve_precision, trl_fused_loss_available

    here = "cuda" if cuda_available() else "cpu"
    device = here if device == "auto" else device
    if device not in ("cuda", "cpu"):
        raise ConfigError([f"device must be auto, cuda or cpu; got {device!r}"], "plan")
    if num_devices is None:
        num_devices = int(os.environ.get("WORLD_SIZE", "0")) or (_cuda_device_count() if device == "cuda" else 1) or 1
    if num_devices < 1:
        raise ConfigError([f"num_devices must be >= 1, got {num_devices}"], "plan")
    if device == here:
        precision = resolve_precision(recipe.train.precision)
        weight_bytes = resolve_dtype(recipe.model.dtype).itemsize
        fused = trl_fused_loss_available()
    else:
        gpu = device == "cuda"
        precision = recipe.train.precision if recipe.train.precision != "auto" else ("bf16" if gpu else "fp32")
        dtype = recipe.model.dtype
        weight_bytes = (2 if gpu else 4) if dtype == "auto" else BYTES_PER_VALUE[dtype]
        fused = gpu
    return Hardware(device, num_devices, precision, weight_bytes, fused)


def _cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count()


def strategy_for(recipe: Recipe, num_devices: int) -> str:
    """single on one device; else ddp, fsdp (full shard), or zero<stage> for DeepSpeed."""
    if num_devices == 1:
        return "single"
    backend = recipe.train.distributed_backend
    return f"zero{recipe.train.zero_stage}" if backend == "deepspeed" else backend


def optimizer_states(name: str) -> tuple[int, float | None, str | None]:
    """(states per parameter, bytes per state or None for the parameter dtype, a note when guessed)."""
    if name in OPTIMIZER_STATES:
        return (*OPTIMIZER_STATES[name], None)
    from transformers.training_args import OptimizerNames

    known = [o.value for o in OptimizerNames]
    if name not in known:
        raise ConfigError([f"optimizer {name!r} is not a transformers optimizer; use one of {', '.join(known)}"],
                          "train")
    return 2, None, f"optimizer {name} is not modelled exactly; its state is estimated as AdamW's (an upper bound)"


def activation_bytes(shape: ModelShape, cfg: ModelConfig, method: str, batch: int, seq: int, compute_bytes: int,
                     gradient_checkpointing: bool, fused_loss: bool = False) -> tuple[float, float, float]:
    """(saved activations, recomputed layer, logits) in bytes for one micro-batch of ``batch`` x ``seq`` tokens.

    Counted from what autograd keeps for backward in a Llama-style layer, in
    the compute dtype p (n = batch x seq tokens, h hidden, i intermediate, q =
    heads x head_dim, kv = kv_heads x head_dim):

    - each RMSNorm: its fp32 upcast input (4nh), plus the normalised input when
      its weight trains (p nh);
    - each linear layer's input when its weight trains (full: shared inputs such
      as q/k/v's are stored once); with LoRA, lora_A's input (a separate copy
      per adapter when PEFT casts it to the fp32 adapter dtype under mixed
      precision, or when lora_dropout makes one) plus lora_B's (n r);
    - attention (SDPA / flash): q, k, v (native GQA keeps kv, not q, for k and
      v) and the output; eager attention also stores the fp32 softmax and its
      cast, b x heads x seq x seq each: the quadratic term that flash kernels
      remove (Korthikanti et al. 2022, "Reducing Activation Recomputation");
    - SwiGLU MLP: gate output, its SiLU, up output (3 p ni).

    Gradient checkpointing (one checkpoint per decoder layer, as transformers
    does it) keeps each layer's input (p nh) and rebuilds one layer at a time
    in the backward pass: that layer is the second number (0 without it).
    Logits: the fp32 upcast for the loss, the log-softmax saved by
    cross-entropy and its gradient are alive together in the backward pass:
    3 x 4 n V. With ``fused_loss`` (TRL's chunked LM head) only one fp32 tile
    of :data:`FUSED_LOSS_TILE`, an fp32 gradient of the hidden states and, when
    lm_head trains, an fp32 gradient buffer for it. Measured on CPU in fp32
    (tiny-llama, SmolLM2-135M), saved tensors and the forward + backward peak
    agree with these formulas within a few percent.
    """
    s = shape
    n, p = batch * seq, compute_bytes
    full = method == "full"
    targets = set() if full else set(lora_targets(s, cfg))
    adapter_copies = p < 4 or cfg.lora_dropout > 0  # a new tensor per adapter instead of the shared input

    def saved_input(group: tuple[str, ...], width: int) -> float:
        if full:
            return p * n * width
        hit = [m for m in group if m in targets]
        if not hit:
            return 0.0
        copies = len(hit) if adapter_copies else 1
        mask = len(hit) * n * width if cfg.lora_dropout > 0 else 0  # dropout keeps a 1-byte mask
        return copies * p * n * width + mask + len(hit) * p * n * cfg.lora_rank

    h, i = s.hidden_size, s.intermediate_size
    q, kv = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
    flash = s.attn_implementation != "eager"
    kv_saved = kv if flash else q  # eager repeats k/v to every query head before the matmul
    norm = 4 * n * h + (p * n * h if full else 0)
    attention = p * n * (q + 2 * kv_saved) + p * n * q
    if not flash:
        attention += (4 + (p if p < 4 else 0)) * batch * s.num_heads * seq * seq
    layer = (2 * norm + saved_input(ATTN_IN, h) + attention + saved_input(ATTN_OUT, q)
             + saved_input(MLP_IN, h) + 3 * p * n * i + saved_input(MLP_OUT, i))
    head_trains = full or cfg.train_embeddings
    final = norm + (p * n * h if head_trains else 0)  # lm_head keeps its input when it trains
    if fused_loss:
        tokens, vocab = min(n, FUSED_LOSS_TILE[0]), min(s.vocab_size, FUSED_LOSS_TILE[1])
        logits = 4 * tokens * vocab + 4 * n * h + (4 * s.vocab_size * h if head_trains else 0)
    else:
        logits = 3 * 4 * n * s.vocab_size
    if gradient_checkpointing:
        return s.num_layers * p * n * h + final, layer, logits
    return s.num_layers * layer + final, 0.0, logits


def estimate_memory(model: ModelConfig | LoadedModel | ModelShape, recipe: Recipe, *, method: str | None = None,
                    hardware: Hardware | None = None, strategy: str | None = None, shape: ModelShape | None = None
                    ) -> MemoryEstimate:
    """Peak memory of one device for ``method`` (default: the recipe's) under ``recipe``'s batch and precision.

    ``model`` gives the parameter counts (a :class:`LoadedModel`, or the
    recipe's :class:`ModelConfig` built on the meta device). ``hardware``
    defaults to this machine; ``strategy`` to the recipe's
    (:func:`strategy_for`). The per-component formulas are in the module
    docstring and :func:`activation_bytes`.
    """
    cfg, train = recipe.model, recipe.train
    method = method or cfg.method
    if method not in METHODS:
        raise ConfigError([f"method must be one of {', '.join(METHODS)}; got {method!r}"], "model")
    shape = shape or model_shape(model)
    hw = hardware or resolve_hardware(recipe)
    strategy = strategy or strategy_for(recipe, hw.num_devices)
    n_dev = hw.num_devices if strategy != "single" else 1
    half = hw.precision in ("bf16", "fp16")
    compute_bytes = 2 if half or hw.weight_bytes == 2 else 4
    zero = strategy.startswith("zero")
    notes: list[str] = []

    main, embeddings = trainable_params(shape, cfg, method)
    # Bytes per weight as the run holds them. DeepSpeed casts the whole model to the half dtype (its fp32
    # master copy is counted apart); otherwise every trainable tensor is fp32 whatever the weights' dtype
    # (cptnb.models.loading.train_in_fp32); QLoRA's prepare_model_for_kbit_training upcasts the
    # non-quantized frozen weights to fp32.
    w = 2 if (zero and half) else hw.weight_bytes
    trainable_w = 2 if (zero and half) else 4
    if method == "full":
        groups = [(main, trainable_w)]
        frozen = 0.0
    else:
        other = 2 if zero and half else 4 if method == "qlora" else w
        groups = [(main, trainable_w), (embeddings, trainable_w)]
        if method == "qlora":
            rest = shape.total_params - shape.quantizable_params  # embeddings and norms stay unquantized
            frozen = shape.quantizable_params * NF4_BYTES_PER_PARAM + rest * other
        else:
            frozen = shape.total_params * w
    trainable = sum(count for count, _ in groups)
    trainable_bytes = sum(count * b for count, b in groups)

    states, state_bytes, guess = optimizer_states(train.optimizer)
    if guess:
        notes.append(guess)
    if state_bytes is None:  # torch optimizers keep state in the dtype of the weights they update
        optimizer = states * (4 * trainable if zero and half else trainable_bytes)
    else:
        optimizer = states * state_bytes * trainable
    master = 4.0 * trainable if zero and half else 0.0
    gradients = float(trainable_bytes)
    if strategy == "ddp":
        gradients *= 2
        notes.append("DDP copies gradients into its communication buckets (gradient_as_bucket_view=False)")

    # Sharding: ZeRO-1 optimizer (+master), ZeRO-2 also gradients, ZeRO-3 and FSDP (full shard) also weights.
    sharded = {"zero1": {"opt"}, "zero2": {"opt", "grad"}, "zero3": {"opt", "grad", "w"}, "fsdp": {"opt", "grad", "w"}}
    parts = sharded.get(strategy, set())
    weights = frozen + trainable_bytes
    if "opt" in parts:
        optimizer, master = optimizer / n_dev, master / n_dev
    if "grad" in parts:
        gradients /= n_dev
    if "w" in parts:
        # Each layer is all-gathered in the compute dtype while it runs; the next one is prefetched.
        weights = weights / n_dev + 2 * shape.largest_layer_params * compute_bytes
    elif half and not zero and method != "qlora" and (w == 4 or method == "full"):
        # Autocast runs each linear layer on a half-precision copy of its fp32 weight, kept for backward.
        weights += 2 * (shape.quantizable_params + shape.vocab_size * shape.hidden_size)
        notes.append("fp32 weights under bf16/fp16 autocast: half-precision copies of linear weights are counted")

    micro = train.per_device_batch_size
    seq = recipe.data.block_tokens or cfg.max_seq_len_tokens
    activations, recompute, logits = activation_bytes(
        shape, cfg, method, micro, seq, compute_bytes, train.gradient_checkpointing, hw.fused_loss
    )
    if shape.model_type not in KNOWN_LAYOUTS:
        notes.append(f"activation formula is for Llama-style layers; {shape.model_type} is approximated")
    return MemoryEstimate(
        method=method, strategy=strategy, num_devices=n_dev, trainable_params=trainable, weights_bytes=weights,
        master_weights_bytes=master, gradients_bytes=gradients, optimizer_bytes=optimizer,
        activations_bytes=activations, recompute_bytes=recompute, logits_bytes=logits,
        overhead_bytes=RUNTIME_OVERHEAD_BYTES[hw.device], notes=notes,
    )
