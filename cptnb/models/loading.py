"""Load a model ready for LoRA, QLoRA or full continued pretraining.

This is the one place where the backend is chosen: Unsloth's
``FastLanguageModel`` when a CUDA GPU and Unsloth are present, plain
transformers + PEFT otherwise (CPU, or ``backend="transformers"``). Whatever
path is taken, :func:`load_model` checks that the parameters the recipe says are
trainable really are, and :class:`TrainableCheck` later confirms they changed.
Trainable tensors are always fp32, whatever dtype the frozen weights have: the
fp16 gradient scaler refuses fp16 gradients, and bf16 rounds small updates away.

Example::

    loaded = load_model(ModelConfig(name="smollm2-135m", method="lora", train_embeddings=True))
    print(loaded.summary())
"""

from __future__ import annotations

import importlib.util
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cptnb.config import ModelConfig
from cptnb.configbase import DTYPE_NAMES, canonical_dtype
from cptnb.errors import ConfigError, CptnbError, ModelNotAvailableError
from cptnb.guidance import GPU_ON_COLAB, in_colab, in_kaggle
from cptnb.models.hub import hub_reachable
from cptnb.models.zoo import ALIASES, resolve_alias

log = logging.getLogger(__name__)

EMBEDDING_MODULES = ("embed_tokens", "lm_head")


class _DropRecord(logging.Filter):
    """Drops the records of one logger whose message template starts with ``prefix``; lets every other through."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_bitsandbytes_cpu_kernel_warning() -> None:
    """Silence bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community" warning, and only it.

    ``bitsandbytes/backends/cpu/ops.py`` logs it on import, on CPUs with avx512bf16, when the Hub kernel
    for 4-bit matmuls on the CPU cannot be downloaded, which is always so offline. The kit never runs 4-bit
    on a CPU (QLoRA needs a GPU), so it would only puzzle a learner in every notebook. The filter sits on
    that module's own logger; other bitsandbytes records, and every other logger, are untouched.
    """
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")  # the logger that module creates on import
    if not any(isinstance(f, _DropRecord) for f in logger.filters):
        logger.addFilter(_DropRecord("Failed to load CPU gemm_4bit_forward from kernels-community"))


# Installed before anything below imports peft (which imports bitsandbytes when it is installed).
quiet_bitsandbytes_cpu_kernel_warning()


@dataclass
class LoadedModel:
    """A model, its tokenizer, and what the kit knows about how it will train."""

    model: Any
    tokenizer: Any
    backend: str  # "unsloth" or "transformers"
    method: str
    source: str  # local directory or hub id the weights came from
    trainable_names: list[str] = field(default_factory=list)
    trainable_params: int = 0
    total_params: int = 0
    max_seq_len_tokens: int = 0  # longest training block the model was loaded for (Unsloth cuts longer inputs)
    loraplus_lr_ratio: float = 0.0  # LoRA+: B matrices train at this multiple of the learning rate; 0 is off

    def summary(self) -> str:
        share = 100 * self.trainable_params / max(self.total_params, 1)
        return (
            f"{self.source} via {self.backend} ({self.method}): "
            f"{self.trainable_params:,} of {self.total_params:,} parameters trainable ({share:.2f}%)"
        )


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def choose_backend(cfg: ModelConfig) -> str:
    """'unsloth' when asked for or (auto) when a CUDA GPU and Unsloth are present; else 'transformers'."""
    has_unsloth = importlib.util.find_spec("unsloth") is not None
    if cfg.backend == "unsloth":
        if not has_unsloth:
            raise CptnbError(
                "backend='unsloth' but Unsloth is not installed: pip install unsloth, or set backend='auto'"
            )
        return "unsloth"
    if cfg.backend == "auto" and has_unsloth and cuda_available():
        return "unsloth"
    return "transformers"


def torch_dtype(name: str):
    """The torch dtype of a dtype name in the kit's vocabulary: ``torch_dtype("bf16") is torch.bfloat16``.

    Aliases are read as their canonical name (``"bfloat16"`` as ``"bf16"``); an
    unknown name raises :class:`ConfigError` listing the valid ones.
    """
    import torch

    name = canonical_dtype(name)
    if name not in DTYPE_NAMES:
        raise ConfigError([f"dtype must be one of {', '.join(DTYPE_NAMES)}; got {name!r}"], "dtype")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def resolve_dtype(name: str):
    """The weight dtype: explicit (bf16, fp16, fp32, or an alias), or for auto from the hardware.

    auto is bf16 on GPUs that support it, fp16 on older GPUs and fp32 on CPU.
    """
    import torch

    if canonical_dtype(name) != "auto":
        return torch_dtype(name)
    if cuda_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def resolve_source(cfg: ModelConfig) -> str:
    """Local directory for an alias (built once) or a local path; otherwise the hub id as given."""
    built = resolve_alias(cfg.name, cfg.cache_dir, cfg.seed)
    if built is not None:
        return str(built)
    path = Path(cfg.name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(
                f"{path} exists but holds no config.json; point model.name at a saved model folder"
            )
        return str(path)
    if cfg.name.startswith((".", "/", "~")) or cfg.name.count("/") > 1:
        raise ModelNotAvailableError(f"model directory {cfg.name} does not exist; check the path")
    return cfg.name


def _not_available(name: str, err: Exception) -> ModelNotAvailableError:
    aliases = ", ".join(sorted(ALIASES))
    return ModelNotAvailableError(
        f"model {name!r} is not in the local Hugging Face cache and could not be downloaded "
        f"({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
        f"To fix: on a machine with internet run `hf download {name}` (log in first for gated models such as "
        f"Llama), or point model.name at a local folder, or use an offline alias ({aliases})."
    )


def is_download_error(err: BaseException) -> bool:
    """Whether ``err`` (or an error it was raised from) says the files could not be fetched from the Hub.

    transformers raises ``OSError`` from huggingface_hub's errors (offline cache miss, unknown or gated
    repo, bad repo id) and Unsloth wraps those in a ``RuntimeError`` (``unsloth/models/loader.py`` 1661);
    either way a huggingface_hub error or a network error is in the chain. Anything else (CUDA out of
    memory, an architecture transformers cannot build) is not a download problem and is raised as it is.
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        module = type(err).__module__ or ""
        if module.startswith(("huggingface_hub", "requests", "httpx", "urllib3")) or isinstance(
            err, (ConnectionError, TimeoutError)
        ):
            return True
        err = err.__cause__ or err.__context__
    return False


def from_pretrained_or_explain(loader, source: str, **kwargs):
    """Call a ``from_pretrained`` and turn hub/offline failures (only those) into one clear error.

    A hub id is looked up in the local cache only when the Hub cannot be reached (:func:`hub_reachable`),
    so offline it fails (or loads from the cache) at once instead of after huggingface_hub's retries.
    """
    if not Path(source).exists() and not hub_reachable():
        kwargs.setdefault("local_files_only", True)
    try:
        return loader.from_pretrained(source, **kwargs)
    except Exception as err:
        # A local folder that fails to load is not a download problem, nor is anything but a Hub error.
        if Path(source).exists() or not is_download_error(err):
            raise
        raise _not_available(source, err) from None


def linear_module_names(model) -> list[str]:
    """Leaf names of the linear layers LoRA can target ('all-linear' minus lm_head)."""
    import torch

    names = {
        full.rsplit(".", 1)[-1]
        for full, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not full.endswith("lm_head")
    }
    return sorted(names)


def _target_modules(cfg: ModelConfig, model) -> list[str]:
    return linear_module_names(model) if cfg.target_modules == "all-linear" else list(cfg.target_modules)


def _load_transformers(cfg: ModelConfig, source: str, dtype):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    tokenizer = from_pretrained_or_explain(AutoTokenizer, source, trust_remote_code=cfg.trust_remote_code)
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": cfg.trust_remote_code}
    if cfg.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype if dtype != torch.float16 or cuda_available() else torch.float32,
        )
    model = from_pretrained_or_explain(AutoModelForCausalLM, source, **kwargs)
    if cfg.method == "full":
        model.requires_grad_(True)
        return model, tokenizer

    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if cfg.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        use_rslora=cfg.use_rslora,
        use_dora=cfg.use_dora,
        target_modules=_target_modules(cfg, model),
        modules_to_save=list(EMBEDDING_MODULES) if cfg.train_embeddings else None,
        # Tied input/output embeddings must stay tied after PEFT copies them.
        ensure_weight_tying=bool(cfg.train_embeddings and model.config.tie_word_embeddings),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora), tokenizer


def _ties_embeddings(model) -> bool:
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    return bool(getattr(config, "tie_word_embeddings", False))


def unreachable_and_not_cached(source: str) -> bool:
    """A hub id whose config is not in the local cache while the Hub cannot be reached (nothing could load it)."""
    if Path(source).exists() or hub_reachable():
        return False
    from huggingface_hub import try_to_load_from_cache

    return not isinstance(try_to_load_from_cache(source, "config.json"), str)


def _load_unsloth(cfg: ModelConfig, source: str, dtype):
    # Unsloth asks the Hub itself (model info, then the files) with huggingface_hub's retries: offline, with the
    # model not cached, say so at once, before importing it.
    if unreachable_and_not_cached(source):
        raise _not_available(source, OSError("not in the local cache, and the Hugging Face Hub cannot be reached"))
    import torch
    from unsloth import FastLanguageModel  # imported only here: Unsloth patches libraries on import

    # Process-wide: a full load sets it to 1 (unsloth/models/vision.py 4025) and a LoRA load through
    # FastLlamaModel never resets it, so a later get_peft_model would return the model without adapters
    # (unsloth/models/llama.py 4641). Each load says what it is.
    os.environ["UNSLOTH_ENABLE_FULL_FINETUNING"] = "1" if cfg.method == "full" else "0"
    extra: dict[str, Any] = {}
    if cfg.method == "full" and dtype == torch.bfloat16 and cuda_available():
        # Unsloth's default for bf16 is pure bf16 training with no fp32 master copy (vision.py 5432-5437,
        # unsloth_zoo/training_utils.py 365-367); this keeps fp32 weights under bf16 autocast.
        extra["float32_mixed_precision"] = True
    try:
        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=source,
            max_seq_length=cfg.max_seq_len_tokens,
            dtype=dtype,
            load_in_4bit=cfg.method == "qlora",
            full_finetuning=cfg.method == "full",
            trust_remote_code=cfg.trust_remote_code,
            **extra,
        )
    except Exception as err:
        # Unsloth reports a model it cannot fetch as a RuntimeError raised from the Hub error
        # (unsloth/models/loader.py 1661); CUDA out of memory is a RuntimeError too, and stays one.
        if Path(source).exists() or not is_download_error(err):
            raise
        raise _not_available(source, err) from None
    if cfg.method == "full":
        return model, tokenizer
    targets = _target_modules(cfg, model)
    if cfg.train_embeddings:
        targets += list(EMBEDDING_MODULES)  # Unsloth turns these into fully trained modules
    model = FastLanguageModel.get_peft_model(
        model,
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        use_rslora=cfg.use_rslora,
        # Passed on to PEFT's LoraConfig; Unsloth's fused LoRA kernels skip DoRA layers (llama.py 5355-5413),
        # which then run PEFT's own DoRA forward.
        use_dora=cfg.use_dora,
        target_modules=targets,
        bias="none",
        use_gradient_checkpointing="unsloth",
        random_state=cfg.seed,
        # Said, not left to Unsloth's guess: its CPU fallback (unsloth_zoo/cpu/loader.py 412) passes the
        # flag on only when given, and PEFT then trains two diverging copies of a tied embedding.
        ensure_weight_tying=bool(cfg.train_embeddings and _ties_embeddings(model)),
    )
    return model, tokenizer


def _cast_at_the_edges(copy, wrapper) -> None:
    """Let an fp32 trained copy sit among half-precision layers without autocast (evaluation, generation).

    An embedding hands the next layer what the frozen original in ``wrapper`` would have (its current
    dtype); a linear layer (an lm_head, tied or not) takes its input in its own dtype. Under autocast the
    casts change nothing. Unsloth's fast forward casts at the same places (``unsloth/models/llama.py``
    1401 and its fused loss). Once the adapter is merged the wrapper is gone and the embedding's cast with it.
    """
    import weakref

    import torch

    if getattr(copy, "_cptnb_casts", False):
        return
    if isinstance(copy, torch.nn.Embedding):
        owner = weakref.ref(wrapper)

        def to_frozen_dtype(module, args, out):
            wrapped = owner()
            frozen = next(wrapped.original_module.parameters(), None) if wrapped is not None else None
            return out if frozen is None or not frozen.is_floating_point() else out.to(frozen.dtype)

        copy.register_forward_hook(to_frozen_dtype)
    elif isinstance(copy, torch.nn.Linear):
        copy.register_forward_pre_hook(lambda module, args: (args[0].to(module.weight.dtype), *args[1:]))
    copy._cptnb_casts = True


def train_in_fp32(model) -> int:
    """Give every trainable fp16/bf16 tensor fp32 storage, in place; returns how many elements moved.

    PEFT upcasts only adapter layers (``peft/tuners/tuners_utils.py`` ``cast_adapter_dtype``), so the
    copies of trained embeddings, and every weight of full training, kept the load dtype: the fp16
    gradient scaler refuses them ("Attempting to unscale FP16 gradients") and in bf16 an update smaller
    than half a unit in the last place is lost. The tensors keep their identity, so tied weights stay
    tied; the frozen weights keep the dtype the user chose.
    """
    import torch

    half = (torch.float16, torch.bfloat16)
    moved = 0
    for param in {id(p): p for p in model.parameters()}.values():
        if param.requires_grad and param.dtype in half:
            param.data = param.data.float()
            moved += param.numel()
    for module in model.modules():  # PEFT's ModulesToSaveWrapper: a trained copy next to the frozen original
        copies, original = getattr(module, "modules_to_save", None), getattr(module, "original_module", None)
        if not isinstance(copies, torch.nn.ModuleDict) or original is None:
            continue
        frozen = next((p.dtype for p in original.parameters()), None)
        for copy in copies.values():
            weight = getattr(copy, "weight", None)
            if frozen in half and weight is not None and weight.dtype != frozen:
                _cast_at_the_edges(copy, module)
    return moved


def trainable_parameter_names(model) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


def assert_trainable(model, cfg: ModelConfig) -> list[str]:
    """Check that what ``cfg`` says should train really has ``requires_grad``; return the names.

    Other tools have silently skipped ``lm_head`` and tied embeddings; here a
    mismatch is an error, not a surprise after hours of training. Trainable
    tensors must be fp32 (see :func:`train_in_fp32`).
    """
    import torch

    names = trainable_parameter_names(model)
    problems: list[str] = []
    if not names:
        problems.append("no parameter requires grad")
    half = sorted({str(p.dtype).removeprefix("torch.") for n, p in model.named_parameters()
                   if p.requires_grad and p.dtype in (torch.float16, torch.bfloat16)})
    if half:
        problems.append(f"trainable parameters are {', '.join(half)}, not fp32: they would train without an fp32 "
                        "master copy (call train_in_fp32 on the model)")
    if cfg.method in ("lora", "qlora"):
        if not any("lora_" in n for n in names):
            problems.append("no LoRA weights are trainable")
        frozen_base = [n for n in names if "lora_" not in n and not any(m in n for m in EMBEDDING_MODULES)]
        problems += _dora_problems(model, names, cfg.use_dora)
        if frozen_base:
            problems.append(f"base weights unexpectedly trainable: {frozen_base[:3]}")
        if cfg.train_embeddings:
            for module in EMBEDDING_MODULES:
                if not _module_trains(model, module, names):
                    problems.append(f"train_embeddings=True but {module} is not trainable")
        elif any(m in n for n in names for m in EMBEDDING_MODULES):
            problems.append("embeddings are trainable although train_embeddings=False")
    elif cfg.method == "full":
        frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
        if frozen:
            problems.append(f"full training but {len(frozen)} parameters are frozen, e.g. {frozen[:3]}")
    if problems:
        raise CptnbError("trainable-parameter check failed: " + "; ".join(problems))
    return names


def _dora_problems(model, names: list[str], use_dora: bool) -> list[str]:
    """DoRA adds one trainable ``lora_magnitude_vector`` per adapted layer; plain LoRA adds none."""
    adapted = {n.split(".lora_A.")[0] for n in names if ".lora_A." in n}
    magnitudes = {n.split(".lora_magnitude_vector")[0] for n in names if ".lora_magnitude_vector" in n}
    if use_dora and adapted - magnitudes:
        return [f"use_dora=True but {len(adapted - magnitudes)} of {len(adapted)} adapted layers have no trainable "
                f"DoRA magnitude, e.g. {sorted(adapted - magnitudes)[:2]}"]
    if not use_dora and magnitudes:
        return [f"use_dora=False but {len(magnitudes)} layers train a DoRA magnitude, e.g. {sorted(magnitudes)[:2]}"]
    return []


def _module_trains(model, module: str, names: list[str]) -> bool:
    if any(module in n for n in names):
        return True
    # A tied lm_head shares its tensor with embed_tokens, so named_parameters lists it once.
    out = model.get_output_embeddings()
    inp = model.get_input_embeddings()
    weight = getattr(out, "weight", None)
    tied = weight is not None and weight is getattr(inp, "weight", None)
    return module == "lm_head" and tied and weight.requires_grad


def load_tokenizer(cfg: ModelConfig):
    """Only the tokenizer of ``cfg.name`` (for data preparation without loading weights)."""
    from transformers import AutoTokenizer

    tokenizer = from_pretrained_or_explain(AutoTokenizer, resolve_source(cfg), trust_remote_code=cfg.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(cfg: ModelConfig) -> LoadedModel:
    """Load ``cfg.name`` and make it trainable for ``cfg.method``; see the module docstring."""
    import torch

    backend = choose_backend(cfg)
    dtype = resolve_dtype(cfg.dtype)
    if not cuda_available() and (in_colab() or in_kaggle()):
        # A hosted notebook without a GPU usually means the runtime type was left at CPU: say so before the slow part.
        log.warning("no GPU is visible: this runs on the CPU, many times slower. For a GPU, %s, then run the "
                    "notebook again from the top.", GPU_ON_COLAB)
    if cfg.method == "qlora" and backend == "transformers" and importlib.util.find_spec("bitsandbytes") is None:
        raise CptnbError("method='qlora' needs bitsandbytes: pip install bitsandbytes")
    source = resolve_source(cfg)
    torch.manual_seed(cfg.seed)  # LoRA A matrices are random: same seed, same start
    loader = _load_unsloth if backend == "unsloth" else _load_transformers
    model, tokenizer = loader(cfg, source, dtype)
    moved = train_in_fp32(model)
    if moved:
        log.info("%s trainable values moved to fp32 (the weights they train against stay %s)", f"{moved:,}",
                 str(dtype).removeprefix("torch."))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    names = assert_trainable(model, cfg)
    params = {id(p): p for p in model.parameters()}.values()  # tied tensors counted once
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        backend=backend,
        method=cfg.method,
        source=source,
        trainable_names=names,
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        total_params=sum(p.numel() for p in params),
        max_seq_len_tokens=cfg.max_seq_len_tokens,
        loraplus_lr_ratio=float(cfg.loraplus_lr_ratio),
    )
    log.info(loaded.summary())
    return loaded


class TrainableCheck:
    """Snapshot trainable tensors, then verify each one moved after training steps.

    LoRA's B matrices start at zero, so the A matrices get no gradient on the
    first step; check after two or more optimizer steps.
    """

    def __init__(self, model, names: list[str], max_tensors: int = 64):
        params = dict(model.named_parameters())
        # Every LoRA/embedding tensor is small enough to copy; for full training sample evenly.
        step = max(1, len(names) // max_tensors)
        self.names = names[::step]
        self.before = {n: params[n].detach().float().cpu().clone() for n in self.names}

    def unchanged(self, model) -> list[str]:
        params = dict(model.named_parameters())
        return [n for n in self.names if torch_equal(params[n], self.before[n])]

    def verify(self, model) -> None:
        stuck = self.unchanged(model)
        if stuck:
            raise CptnbError(
                f"{len(stuck)} of {len(self.names)} parameters reported trainable did not change after training, "
                f"e.g. {stuck[:3]}. Check the learning rate and that the optimizer received these parameters."
            )


def torch_equal(param, snapshot) -> bool:
    return bool((param.detach().float().cpu() == snapshot).all())


def input_device(model):
    """The device token ids must be on for ``model``: that of the (trained copy of the) input embedding.

    Not ``next(model.parameters()).device``: with trained embeddings Unsloth moves the frozen original
    embedding off the GPU (``unsloth/models/_utils.py`` 5242-5248, called from ``llama.py`` 5081-5083),
    and that original is the first parameter PEFT lists, so inputs would land on the CPU.
    """
    weight = getattr(model.get_input_embeddings(), "weight", None) if hasattr(model, "get_input_embeddings") else None
    return weight.device if weight is not None else next(model.parameters()).device


def _recorded_limits(model) -> list[tuple[Any, int]]:
    # The module's own attribute, not one PEFT's wrappers forward from the model they wrap.
    found = [(m, m.__dict__.get("max_seq_length")) for m in model.modules()]
    return [(m, n) for m, n in found if isinstance(n, int) and not isinstance(n, bool)]


def truncation_limit(model) -> int | None:
    """The input length past which ``model``'s forward cuts its inputs, or None (transformers never does).

    Unsloth records the ``max_seq_length`` it was loaded with on every module
    (``unsloth/models/llama.py`` 4468-4475) and its patched forward cuts ``input_ids`` and the attention
    mask to it (llama.py 1359-1371, "We shall truncate it ourselves"): a model loaded for 256-token
    training blocks would score only the first 256 tokens of a 1,536-token window.
    """
    limits = [n for _, n in _recorded_limits(model)]
    return min(limits) if limits else None


@contextmanager
def inputs_up_to(model, tokens: int):
    """Within the block, ``model`` takes inputs of up to ``tokens`` tokens uncut; its own limit returns after.

    For scoring the model a run trained (evaluation windows and few-shot contexts are longer than training
    blocks). Unsloth's forward reads the limit at each call and builds rotary tables as long as the input
    needs (llama.py 1578-1579), so the longer inputs are computed as plain transformers computes them.
    A model without a limit is left as it is.

    Example::

        with inputs_up_to(loaded.model, 1536):
            score = score_texts(loaded.model, loaded.tokenizer, texts, window_tokens=1536)
    """
    raised = [(m, n) for m, n in _recorded_limits(model) if n < tokens]
    if raised:
        log.info("inputs of up to %d tokens: lifting the model's max_seq_length of %d while scoring",
                 tokens, min(n for _, n in raised))
    for module, _ in raised:
        module.max_seq_length = tokens
    try:
        yield model
    finally:
        for module, limit in raised:
            module.max_seq_length = limit


def load_for_eval(name: str, adapter: str | Path | None = None, dtype: str = "auto", cache_dir: str = ""):
    """``(model, tokenizer)`` ready to score: a base model (alias, folder or hub id), optionally with an adapter.

    The adapter is applied, not merged, so the model scored is exactly the
    trained one; a merged export is just another ``name``. On a GPU the model
    moves there. The tokenizer comes from the adapter folder when it holds one
    (training saves it there), else from the base. ``dtype="auto"`` keeps the
    checkpoint's own dtype, as lm-eval's ``dtype=auto`` does
    (``lm_eval/models/huggingface.py`` 814), so scores match the harness's on a
    GPU too; ``bf16``, ``fp16`` or ``fp32`` forces one.

    Example::

        model, tok = load_for_eval("smollm2-135m", adapter="runs/cpt/adapter")
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = ModelConfig(name=name, method="full", dtype=dtype, cache_dir=cache_dir)
    source = resolve_source(cfg)
    dtype = "auto" if cfg.dtype == "auto" else torch_dtype(cfg.dtype)
    model = from_pretrained_or_explain(AutoModelForCausalLM, source, dtype=dtype)
    tokenizer_source = source
    if adapter:
        adapter_path = Path(adapter).expanduser()
        if not (adapter_path / "adapter_config.json").is_file():
            raise ModelNotAvailableError(
                f"{adapter_path} holds no adapter_config.json; pass the adapter/ folder a LoRA run wrote "
                "(e.g. runs/cpt/adapter), or a merged model folder as the model instead"
            )
        from peft import PeftModel

        from cptnb.vocab.adapter import fit_base_to_adapter

        fit_base_to_adapter(model, adapter_path)  # an adapter with an extended vocabulary needs the rows it trained
        model = PeftModel.from_pretrained(model, str(adapter_path), is_trainable=False)
        if (adapter_path / "tokenizer_config.json").is_file():
            tokenizer_source = str(adapter_path)
    tokenizer = from_pretrained_or_explain(AutoTokenizer, tokenizer_source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model.eval(), tokenizer
