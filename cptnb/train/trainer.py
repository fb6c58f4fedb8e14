"""One training path for LoRA, QLoRA and full continued pretraining.

:func:`train` runs TRL's ``SFTTrainer`` on packed blocks (``input_ids`` of equal
length, so no padding and no truncation happen). When Unsloth was chosen in
:mod:`cptnb.models.loading`, Unsloth has already patched TRL, so the same code runs its
fused kernels; on CPU it is plain TRL + PEFT. The kit adds what CPT needs on
top: a separate, lower learning rate for trained embeddings, warmup + cosine /
linear decay to a floor, held-out domain and general loss during training (the
forgetting signal), a stop with a clear message when the loss turns NaN/inf, a
check that the trainable parameters really moved, metric events for the
loggers in :mod:`cptnb.train.monitor`, and resume from the last *complete* checkpoint
(a run killed while writing one falls back to the one before). Under
``torchrun`` / ``accelerate launch`` the same function trains with DDP, FSDP or
DeepSpeed (see :func:`cptnb.train.launch.strategy_arguments`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cptnb.config import TrainConfig
from cptnb.errors import ConfigError, CptnbError, TrainingDivergedError
from cptnb.guidance import check_precision, explain_out_of_memory, training_oom_advice
from cptnb.models.loading import EMBEDDING_MODULES, LoadedModel, TrainableCheck, cuda_available
from cptnb.train import document_packing
from cptnb.train.checkpoints import check_resumable, last_complete_checkpoint, resolve_checkpoint
from cptnb.train.monitor import MetricLogger, MultiLogger, NullLogger
from cptnb.train.schedules import lr_multiplier, warmup_steps_for
from cptnb.train.trackers import tracker_bridge
from cptnb.train.watch import TrainingWatch, watch_callback

log = logging.getLogger(__name__)

# Trainable parameters are checked for movement after this many optimizer steps of a run
# (LoRA A matrices get their first gradient on step 2, when B is no longer zero).
TRAINABLE_CHECK_STEP = 2


@dataclass
class TrainResult:
    """Where the run went and how it ended."""

    output_dir: Path
    final_dir: Path  # adapter (LoRA/QLoRA) or full model, with tokenizer
    steps: int
    final_train_loss: float
    history: list[dict[str, Any]]  # events logged by this call (a resumed run: steps after the checkpoint)
    resumed_from_step: int = 0  # optimizer step of the checkpoint this call started from; 0 for a fresh run
    watch: dict[str, Any] | None = None  # with a TrainingWatch: its evaluations, overhead and threshold verdict


def resolve_precision(precision: str) -> str:
    """'bf16' on GPUs that support it, 'fp16' on older GPUs, 'fp32' on CPU, unless set."""
    if precision != "auto":
        return precision
    if cuda_available():
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def _is_embedding(name: str) -> bool:
    return any(module in name for module in EMBEDDING_MODULES)


def param_groups(model, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Optimizer groups: trained embeddings get their own, lower learning rate (Unsloth's CPT recipe)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if not _is_embedding(n)], "lr": cfg.learning_rate},
        {"params": [p for n, p in named if _is_embedding(n)], "lr": cfg.effective_embedding_learning_rate},
    ]
    for group in groups:
        group["weight_decay"] = cfg.weight_decay
    return [g for g in groups if g["params"]]


def loraplus_optimizer(model, cfg: TrainConfig, ratio: float, optimizer_cls, optimizer_kwargs: dict[str, Any]):
    """LoRA+ (PEFT's ``create_loraplus_optimizer``): B matrices at ``ratio`` x learning_rate, A matrices at it.

    PEFT also puts every 1-D trainable tensor (DoRA's magnitudes) with the B matrices. Fully trained
    embed_tokens / lm_head copies would land in its A group at learning_rate; they are kept out of PEFT's
    grouping and get the kit's embedding learning rate, as in :func:`param_groups`.
    """
    from peft.optimizers import create_loraplus_optimizer

    embeddings = [p for n, p in model.named_parameters() if p.requires_grad and _is_embedding(n)]
    for param in embeddings:  # hidden from PEFT's grouping only while it is built
        param.requires_grad_(False)
    try:
        optimizer = create_loraplus_optimizer(
            model, optimizer_cls, lr=cfg.learning_rate, loraplus_lr_ratio=ratio,
            loraplus_weight_decay=cfg.weight_decay, **optimizer_kwargs,
        )
    finally:
        for param in embeddings:
            param.requires_grad_(True)
    if embeddings:
        optimizer.add_param_group(
            {"params": embeddings, "lr": cfg.effective_embedding_learning_rate, "weight_decay": cfg.weight_decay}
        )
    return optimizer


def check_block_length(block_tokens: int, limit: int) -> None:
    """Refuse training blocks longer than ``limit`` (``model.max_seq_len_tokens``), naming both settings.

    ``model.max_seq_len_tokens`` is the longest input Unsloth's forward keeps: it cuts longer ones
    silently (``unsloth/models/llama.py`` 1359-1371), so the rest of every block would never be trained on.
    The same recipe must mean the same run on every backend, so a longer block is refused on all of them.
    :func:`train` checks the blocks it is given; a recipe can be checked before its data is prepared::

        check_block_length(recipe.data.block_tokens or recipe.model.max_seq_len_tokens, recipe.model.max_seq_len_tokens)
    """
    if limit and block_tokens > limit:
        raise ConfigError(
            [f"data.block_tokens: the training blocks are {block_tokens} tokens, longer than model.max_seq_len_tokens "
             f"({limit}), which the model was loaded for (Unsloth cuts every longer input there). Set "
             f"data.block_tokens to 0 (blocks of max_seq_len_tokens) or at most {limit}, or raise "
             f"model.max_seq_len_tokens to {block_tokens} and load the model again."],
            "recipe",
        )


def one_device_per_process(args) -> bool:
    """Train on one GPU when one process, not started by a launcher, sees several; True if that was needed.

    transformers counts every visible GPU in an unlaunched process (``training_args.py`` 1917) and would
    wrap the model in ``nn.DataParallel``, which TRL refuses (``trl/trainer/sft_trainer.py`` 1111); the
    Unsloth path keeps to one device too. transformers itself sets ``_n_gpu = 1`` the same way for a model
    split across devices (``trainer.py`` 490). Several GPUs train through ``torchrun`` / ``accelerate launch``.
    """
    from cptnb.train.launch import world_size_from_env

    if world_size_from_env() > 1 or args.n_gpu <= 1:
        return False
    log.warning("%d GPUs are visible to this one process: training on the first. To train on all of them, "
                "start the run with `cptnb train --nproc %d` (torchrun), or accelerate launch.", args.n_gpu, args.n_gpu)
    args._n_gpu = 1
    return True


def trl_fused_loss_available() -> bool:
    """TRL computes the SFT loss with Triton kernels; they import only where Triton and a GPU exist."""
    if not cuda_available():
        return False
    from trl.trainer import utils as trl_utils

    return getattr(trl_utils, "_ChunkedLogProbFunction", None) is not None


def _trainer_class():
    """Build the trainer subclass at call time, after Unsloth (if used) has patched TRL."""
    import torch
    from transformers import Trainer
    from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME
    from trl import SFTTrainer

    fused_loss_available = trl_fused_loss_available()

    class CptTrainer(SFTTrainer):
        """SFTTrainer with an embedding learning rate and the kit's LR schedule."""

        cpt_config: TrainConfig
        cpt_loraplus_lr_ratio: float = 0.0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if fused_loss_available:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # TRL's fused LM-head loss is a Triton kernel, and Triton does not exist on CPU-only
            # machines: use the model's own cross-entropy (what transformers' Trainer does).
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

        def create_optimizer(self, model=None):
            if self.optimizer is not None:
                return self.optimizer
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            optimizer_kwargs.pop("lr", None)
            if self.cpt_loraplus_lr_ratio:
                self.optimizer = loraplus_optimizer(
                    self.model, self.cpt_config, self.cpt_loraplus_lr_ratio, optimizer_cls, optimizer_kwargs
                )
            else:
                self.optimizer = optimizer_cls(param_groups(self.model, self.cpt_config), **optimizer_kwargs)
            return self.optimizer

        def _load_optimizer_and_scheduler(self, checkpoint):
            plain_cpu_ddp = (
                checkpoint is not None
                and self.args.world_size > 1
                and self.args.device.type == "cpu"
                and not (self.is_fsdp_enabled or self.is_deepspeed_enabled)
            )
            if not plain_cpu_ddp:
                return super()._load_optimizer_and_scheduler(checkpoint)
            # Several CPU processes: transformers maps the optimizer state to args.device, which accelerate
            # sets to "cpu:0", a location torch.load cannot restore to; resuming then fails on every rank.
            folder = Path(checkpoint)
            self.optimizer.load_state_dict(torch.load(folder / OPTIMIZER_NAME, map_location="cpu", weights_only=True))
            self.lr_scheduler.load_state_dict(torch.load(folder / SCHEDULER_NAME, weights_only=True))

        def create_scheduler(self, num_training_steps: int, optimizer=None):
            if self.lr_scheduler is None:
                cfg = self.cpt_config
                warmup = warmup_steps_for(num_training_steps, cfg.warmup_steps, cfg.warmup_ratio)
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                    optimizer or self.optimizer,
                    lambda step: lr_multiplier(step, num_training_steps, warmup, cfg.lr_scheduler, cfg.min_lr_ratio),
                )
                self._created_lr_scheduler = True
            return self.lr_scheduler

    return CptTrainer


def _callbacks(loaded: LoadedModel, logger: MetricLogger, tokens_per_step: int, history: list):
    import psutil
    import torch
    from transformers import TrainerCallback

    class CptCallback(TrainerCallback):
        """Turns trainer logs into metric events; guards against divergence; checks trainables."""

        def __init__(self):
            self.check_movement = True
            self.check: TrainableCheck | None = None
            self.start_step = 0
            self.checked = False
            self.step_started = time.monotonic()
            self.step_seconds: list[float] = []

        def on_train_begin(self, args, state, control, **kw):
            # Snapshot here, after a resumed checkpoint's weights are loaded, so the check compares
            # against where this run starts, not against the freshly initialised model.
            self.start_step = state.global_step
            if self.check_movement:
                self.check = TrainableCheck(loaded.model, loaded.trainable_names)

        def _verify(self) -> None:
            if self.check is not None:
                self.check.verify(loaded.model)
            self.checked = True

        def on_step_begin(self, args, state, control, **kw):
            self.step_started = time.monotonic()

        def on_step_end(self, args, state, control, **kw):
            self.step_seconds.append(time.monotonic() - self.step_started)
            if state.global_step - self.start_step >= TRAINABLE_CHECK_STEP and not self.checked:
                self._verify()

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            event: dict[str, Any] = {"step": state.global_step}
            if "loss" in logs:
                loss = float(logs["loss"])
                event["train_loss"] = loss
                if not math.isfinite(loss):
                    last = last_complete_checkpoint(Path(args.output_dir))
                    raise TrainingDivergedError(
                        f"training loss became {loss} at step {state.global_step}. Last good checkpoint: "
                        f"{last or 'none saved yet'}. Lower learning_rate, set max_grad_norm, or use bf16/fp32 "
                        "instead of fp16, then resume from that checkpoint."
                    )
            for key in ("learning_rate", "grad_norm", "epoch"):
                if key in logs:
                    event[key] = float(logs[key])
            for key, value in logs.items():
                if key.startswith("eval_") and key.endswith("_loss"):
                    event[f"heldout_{key[5:-5]}_loss"] = float(value)
            if self.step_seconds:
                # Seconds inside optimizer steps so far in this call: evaluation and checkpoint saving happen
                # between steps, so two runs' training cost compares without their evaluation schedules.
                event["train_step_seconds"] = sum(self.step_seconds)
                recent = self.step_seconds[-10:]
                seconds = sum(recent) / len(recent)
                event["tokens_per_second"] = tokens_per_step / seconds
                event["eta_seconds"] = seconds * max(0, state.max_steps - state.global_step)
            event["memory_mb"] = (
                torch.cuda.max_memory_allocated() / 2**20
                if torch.cuda.is_available()
                else psutil.Process().memory_info().rss / 2**20
            )
            history.append(event)
            logger.log(event)

        def on_train_end(self, args, state, control, **kw):
            if not self.checked and state.global_step - self.start_step >= TRAINABLE_CHECK_STEP:
                self._verify()

    return [CptCallback()]


def train(
    loaded: LoadedModel,
    train_dataset,
    cfg: TrainConfig,
    eval_datasets: dict[str, Any] | None = None,
    logger: MetricLogger | None = None,
    resume: bool | str = False,
    watch: TrainingWatch | None = None,
) -> TrainResult:
    """Continue pretraining ``loaded.model`` on packed ``train_dataset`` blocks.

    ``eval_datasets`` maps a name ("domain", "general") to packed held-out blocks,
    evaluated every ``cfg.eval_steps`` and reported as ``heldout_<name>_loss``.
    ``resume`` is False, True/"auto" (continue from the last complete checkpoint
    in ``cfg.output_dir`` if there is one) or a checkpoint path; a resumed run
    restores weights, optimizer, schedule, RNG and data position, so its losses
    continue the uninterrupted run's curve. ``watch``
    (:class:`~cptnb.train.watch.TrainingWatch`) adds task scores, generations and
    the retention threshold at the eval steps (and at step 0, the base);
    ``cfg.report_to`` sends every event to the experiment trackers too.

    Example::

        result = train(loaded, packed.dataset, TrainConfig(max_steps=40), logger=LivePlot())
    """
    from trl import SFTConfig

    from cptnb.train.launch import strategy_arguments, world_size_from_env

    if len(train_dataset) == 0:
        raise CptnbError("the training set is empty: no packed block; add data or lower max_seq_len_tokens")
    logger = logger if logger is not None else NullLogger()
    trackers = tracker_bridge(cfg.report_to, cfg.output_dir)  # fails here when a chosen tracker is not installed
    if trackers is not None:
        logger = MultiLogger([logger, trackers])
    block = len(train_dataset[0]["input_ids"])
    check_block_length(block, loaded.max_seq_len_tokens)
    precision = resolve_precision(cfg.precision)
    check_precision(precision)
    evaluating = bool(eval_datasets) and cfg.eval_steps > 0
    strategy = strategy_arguments(cfg, loaded.method, world_size_from_env())
    # data.packing: document blocks carry seq_lengths; see cptnb.train.document_packing.
    flat_batches, data_collator = document_packing.trainer_arguments(loaded, train_dataset)
    if document_packing.is_document_packed(train_dataset):
        log.info("document packing: each document attends only to itself (%s)",
                 "one flattened row per micro-batch, varlen attention" if flat_batches else "position ids per row")
    args = SFTConfig(
        output_dir=cfg.output_dir,
        max_steps=cfg.max_steps,
        num_train_epochs=cfg.num_train_epochs,
        per_device_train_batch_size=cfg.per_device_batch_size,
        per_device_eval_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        optim=cfg.optimizer,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not cuda_available(),
        # FSDP recomputes activations itself (fsdp_config.activation_checkpointing); the Trainer's adds an all-gather.
        gradient_checkpointing=cfg.gradient_checkpointing and "fsdp" not in strategy,
        logging_steps=cfg.logging_steps,
        logging_nan_inf_filter=False,  # the default hides NaN losses behind an average; we want to see them
        eval_strategy="steps" if evaluating else "no",
        eval_steps=cfg.eval_steps if evaluating else None,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        max_length=None if flat_batches else block,  # blocks are already packed: nothing to truncate
        packing=False,
        padding_free=flat_batches,
        dataset_num_proc=None,
        dataloader_num_workers=0,
        disable_tqdm=False,
        **strategy,
    )
    one_device_per_process(args)
    trainer_cls = _trainer_class()
    trainer_cls.cpt_config = cfg
    trainer_cls.cpt_loraplus_lr_ratio = loaded.loraplus_lr_ratio if loaded.method != "full" else 0.0
    history: list[dict[str, Any]] = []
    world = max(1, args.world_size)
    # The global batch: every process trains on its own blocks in the same optimizer step.
    tokens_per_step = block * cfg.per_device_batch_size * cfg.gradient_accumulation_steps * world
    callbacks = _callbacks(loaded, logger, tokens_per_step, history)
    eval_names = list(eval_datasets) if evaluating else []
    watching = watch_callback(watch, loaded, logger, history, eval_names, cfg.eval_steps) if watch else None
    extra = [cb for cb in (trackers, watching) if cb is not None]  # trackers first: they set up before any event
    trainer = trainer_cls(
        model=loaded.model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_datasets if evaluating else None,
        processing_class=loaded.tokenizer,
        callbacks=[*extra, *callbacks] if extra else callbacks,
        data_collator=data_collator,
    )
    if trainer.is_fsdp_enabled or (trainer.is_deepspeed_enabled and cfg.zero_stage == 3):
        # Sharded parameters (FSDP DTensors, ZeRO-3 partitions) cannot be compared with a plain snapshot.
        log.info("sharded parameters: the check that trainable parameters moved is skipped")
        callbacks[0].check_movement = False
    checkpoint = resolve_checkpoint(cfg.output_dir, resume)
    resumed_from_step = check_resumable(checkpoint, cfg)
    if checkpoint:
        log.info("resuming from %s (step %d of %d)", checkpoint, resumed_from_step, cfg.max_steps)
    # The base's scores (step 0) are what the watch compares with; a resumed run has them in its metrics.
    trainer.args.eval_on_start = bool(watching and evaluating and not checkpoint)

    def oom_advice() -> list[str]:  # called only after a failure, when the last checkpoint is known
        return training_oom_advice(cfg, loaded.method, block, last_complete_checkpoint(Path(cfg.output_dir)))

    stage = f"training ({loaded.method}, micro-batches of {cfg.per_device_batch_size} x {block} tokens)"
    started = time.monotonic()
    try:
        with explain_out_of_memory(stage, oom_advice):
            output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        # The end point is measured too when the last step is no eval step: transformers' DefaultFlowCallback does it
        # (trainer_callback.py, "Evaluate at the end"), so the kit adds no evaluation of its own.
        watch_summary = watching.summary(time.monotonic() - started) if watching else None
        if watching is not None and watching.stopped_at is not None:
            watch_summary["final_model_step"] = roll_back_to_best(trainer, watching)
    finally:
        if trackers is not None:
            trackers.finish()
    final_dir = Path(cfg.output_dir) / ("model" if loaded.method == "full" else "adapter")
    trainer.save_model(str(final_dir))  # gathers FSDP/DeepSpeed shards; writes on the main process only
    if trainer.args.should_save:
        loaded.tokenizer.save_pretrained(final_dir)
    losses = [e["train_loss"] for e in history if "train_loss" in e]
    return TrainResult(
        output_dir=Path(cfg.output_dir),
        final_dir=final_dir,
        steps=output.global_step,
        final_train_loss=losses[-1] if losses else float(output.training_loss),
        history=history,
        resumed_from_step=resumed_from_step,
        watch=watch_summary,
    )


def roll_back_to_best(trainer, watching) -> int:
    """After a stop at the retention threshold: load the best checkpoint within it; returns the step now loaded.

    The watch marked that checkpoint as transformers' ``best_model_checkpoint``
    (kept by checkpoint rotation); loading it is what ``load_best_model_at_end``
    does (``Trainer._load_best_model``: adapters, full weights, FSDP, DeepSpeed).
    """
    best = trainer.state.best_model_checkpoint
    if watching.best_step is None or best is None or not Path(best).is_dir():
        log.warning("no checkpoint within the retention threshold was saved: the final model is the one at step %d, "
                    "beyond the threshold; the base model is the last one within it", trainer.state.global_step)
        return trainer.state.global_step
    log.warning("final model: %s (step %d), the best checkpoint within the retention threshold", best,
                watching.best_step)
    trainer._load_best_model()
    return watching.best_step
