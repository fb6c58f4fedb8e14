"""Training throughput of the Llama-3.2-1B shape: cptnb's path against a plain transformers Trainer + PEFT.

The model is built from the published Llama-3.2-1B architecture (hidden 2048, 16 layers, 32 query and 8
key/value heads of 64, MLP 8192, vocabulary 128,256, tied embeddings, llama3 RoPE with theta 500,000:
1,235,814,400 parameters) with random weights, saved once to a temporary folder that both sides load.
The data is packed random tokens, sequence 2,048. For each method, ``full``, ``lora`` (rank 16 on every
linear layer, plus trained embeddings, as a language adaptation needs) and ``qlora`` (the same adapters
on a 4-bit NF4 base), two sides train the same number of steps with the same batch, sequence and
precision (bf16), in the same run:

- ``cptnb``: ``cptnb.models.load_model`` + ``cptnb.train.train`` (Unsloth on a CUDA GPU when installed);
- ``baseline``: ``AutoModelForCausalLM`` (+ ``BitsAndBytesConfig`` for qlora) + PEFT ``get_peft_model`` +
  ``transformers.Trainer``, as one first writes it, with the same gradient checkpointing setting as cptnb's side.

Each side runs in its own process (Unsloth patches transformers when imported, so the baseline must
never see it). A side trains ``--warmup-steps`` steps, then ``--timed-steps`` timed ones: tokens/s is the
tokens of the timed steps over the time between the log events of the last warm-up step and the last
step (each log reads the loss, which waits for the GPU). It reports tokens/s, MFU, and the peak GPU memory
allocated from model load to the end of training.

MFU counts the model FLOPs of the method per token, attention included (PaLM's convention, no causal
halving): full = 6N + 12·L·s·d; lora/qlora = 4N (forward and input gradients through every frozen
matmul) + 6·(LoRA parameters) + 2·d·V for a trained lm_head + 12·L·s·d; N = the matmul parameters
(lm_head included, the embedding lookup not). It is quoted against the dense bf16 spec of H100/H200
(989 TFLOP/s) and against a bf16 matmul measured in the same run.

    python benchmarks/train_throughput.py                  # CUDA GPU: writes results/train_throughput.{json,md}
    python benchmarks/train_throughput.py --dry-run        # CPU, tiny shapes, same code, to a temporary folder
    python benchmarks/train_throughput.py --methods lora --sides cptnb,baseline --batch-size 4
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run from a checkout, with or without `pip install -e .`

from benchmarks._machine import cpu_model  # noqa: E402

SPEC_BF16_DENSE_TFLOPS = 989.0  # H100 SXM and H200, dense bf16 (NVIDIA's data sheets), no sparsity
METHODS = ("full", "lora", "qlora")
SIDES = ("cptnb", "baseline")
LORA_RANK, LORA_ALPHA = 16, 32
LEARNING_RATE = {"full": 5e-5, "lora": 2e-4, "qlora": 2e-4}


# ------------------------------------------------------------------ the model shape


def llama32_1b_config():
    """Llama-3.2-1B's architecture, from the shape cptnb ships (cptnb/planner/shapes/llama-3.2-1b.json)."""
    from cptnb.planner.known_shapes import known_shape

    cfg = known_shape("meta-llama/Llama-3.2-1B").to_config()
    cfg.pad_token_id = 128004  # <|finetune_right_pad_id|>, the pad Llama 3 reserves (the shape names no pad)
    return cfg


def tiny_config():
    """The same architecture family at a size a CPU trains in a second (for ``--dry-run``)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, vocab_size=512, max_position_embeddings=1024, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0}, bos_token_id=0, eos_token_id=1,
        pad_token_id=2,
    )


def matmul_params(cfg) -> int:
    """Parameters that take part in a matmul per token: attention and MLP projections, and lm_head."""
    d, ff, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    head_dim = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    q = cfg.num_attention_heads * head_dim
    kv = cfg.num_key_value_heads * head_dim
    per_layer = d * q + 2 * d * kv + q * d + 3 * d * ff
    return layers * per_layer + d * cfg.vocab_size


def model_flops_per_token(cfg, seq_len: int, method: str, lora_params: int = 0, trained_lm_head: bool = False) -> dict:
    """Training FLOPs per token for ``method`` (see the module docstring); also PaLM's 6N figure for comparison."""
    n = matmul_params(cfg)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attention = 12 * cfg.num_hidden_layers * seq_len * cfg.num_attention_heads * head_dim
    if method == "full":
        flops, formula = 6 * n + attention, "6N + 12·L·s·d"
    else:
        head = 2 * cfg.hidden_size * cfg.vocab_size if trained_lm_head else 0
        flops = 4 * n + 6 * lora_params + head + attention
        formula = "4N + 6·P_lora" + (" + 2·d·V" if trained_lm_head else "") + " + 12·L·s·d"
    return {"flops": flops, "formula": formula, "six_n_flops": 6 * n + attention, "matmul_params": n}


# ------------------------------------------------------------------ the model folder and the data


def write_tokenizer(folder: Path, cfg) -> None:
    """A word-level tokenizer whose vocabulary is exactly the model's (ids mean nothing: the data is random)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = {cfg.bos_token_id: "<|begin_of_text|>", cfg.eos_token_id: "<|end_of_text|>",
                cfg.pad_token_id: "<|finetune_right_pad_id|>"}
    vocab = {specials.get(i, f"t{i}"): i for i in range(cfg.vocab_size)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=specials[cfg.pad_token_id]))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=specials[cfg.bos_token_id],
                                        eos_token=specials[cfg.eos_token_id], pad_token=specials[cfg.pad_token_id])
    tokenizer.save_pretrained(folder)


def build_model_folder(cfg, folder: Path, device: str, dtype_name: str, seed: int = 1309) -> dict:
    """Random weights for ``cfg`` (initialised on ``device``), saved with a tokenizer to ``folder``."""
    import torch
    from transformers import LlamaForCausalLM

    start = time.perf_counter()
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(cfg)
    model = model.to(getattr(torch, dtype_name))
    model.save_pretrained(folder)
    write_tokenizer(folder, cfg)
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return {"parameters": params, "seconds": round(time.perf_counter() - start, 2), "dtype": dtype_name}


def random_blocks(vocab_size: int, seq_len: int, rows: int, seed: int = 1309, labels: bool = False):
    """Packed blocks of uniformly random token ids, as a ``datasets.Dataset`` with ``input_ids``."""
    import numpy as np
    from datasets import Dataset

    ids = np.random.default_rng(seed).integers(0, vocab_size, size=(rows, seq_len), dtype=np.int64).tolist()
    columns = {"input_ids": ids}
    if labels:
        columns["labels"] = ids
    return Dataset.from_dict(columns)


def measure_matmul_tflops(device: str, dtype_name: str, size: int, iters: int) -> dict:
    """Dense matmul throughput of this device: ``iters`` products of two ``size`` x ``size`` matrices."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(max(2, iters // 5)):  # warm-up: cuBLAS heuristics, clocks
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"tflops": 2 * size**3 * iters / seconds / 1e12, "size": size, "iters": iters, "dtype": dtype_name}


# ------------------------------------------------------------------ timing and memory, the same on both sides


class StepClock:
    """Time stamps of the log events that carry a train loss (logging every step); a cptnb MetricLogger too."""

    def __init__(self):
        self.stamps: list[tuple[int, float]] = []
        self.losses: list[float] = []

    def log(self, event: dict) -> None:
        if "train_loss" in event or "loss" in event:
            self.stamps.append((int(event["step"]), time.perf_counter()))
            self.losses.append(float(event.get("train_loss", event.get("loss"))))

    def close(self) -> None:
        pass

    def measure(self, warmup: int, timed: int, tokens_per_step: int) -> dict:
        by_step = dict(self.stamps)
        if warmup not in by_step or warmup + timed not in by_step:
            raise RuntimeError(f"no log event for step {warmup} or {warmup + timed}; logged steps: {sorted(by_step)}")
        seconds = by_step[warmup + timed] - by_step[warmup]
        return {"timed_seconds": seconds, "seconds_per_step": seconds / timed,
                "tokens_per_second": tokens_per_step * timed / seconds,
                "first_loss": self.losses[0], "last_loss": self.losses[-1]}


def baseline_callback(clock: StepClock):
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            clock.log({"step": state.global_step, **(logs or {})})

    return Clock()


class Memory:
    """Peak accelerator memory from the start of one method to its end, net of what was allocated before."""

    def __init__(self, device: str):
        self.device = device

    def __enter__(self):
        import torch

        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated()
        return self

    def result(self) -> dict:
        import torch

        if self.device != "cuda":
            import resource

            return {"peak_rss_mib_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        return {"peak_allocated_gib": (torch.cuda.max_memory_allocated() - self.before) / 2**30,
                "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
                "allocated_before_gib": self.before / 2**30}

    def __exit__(self, *exc):
        return False


def gradient_checkpointing_on(model) -> bool | None:
    """Whether any module of ``model`` recomputes activations (transformers' flag; Unsloth sets it too)."""
    flags = [m.gradient_checkpointing for m in model.modules() if isinstance(getattr(m, "gradient_checkpointing", None), bool)]
    return any(flags) if flags else None


def count_params(model) -> dict:
    named = list(model.named_parameters())
    unique = {id(p): (n, p) for n, p in named}.values()
    return {"trainable": sum(p.numel() for _, p in unique if p.requires_grad),
            "lora": sum(p.numel() for n, p in unique if "lora_" in n and p.requires_grad),
            "total": sum(p.numel() for _, p in unique)}


# ------------------------------------------------------------------ the two sides


def run_cptnb(method: str, a, out: Path) -> dict:
    from cptnb.config import ModelConfig, TrainConfig
    from cptnb.models import load_model
    from cptnb.train import train

    embeddings = method == "lora" or (method == "qlora" and a.qlora_embeddings)
    with Memory(a.device) as memory:
        start = time.perf_counter()
        loaded = load_model(ModelConfig(name=a.model_dir, method=method, dtype=a.dtype, max_seq_len_tokens=a.seq_len,
                                        lora_rank=LORA_RANK, lora_alpha=LORA_ALPHA, train_embeddings=embeddings))
        load_seconds = time.perf_counter() - start
        info = {"backend": loaded.backend, "gradient_checkpointing": gradient_checkpointing_on(loaded.model),
                "load_seconds": load_seconds, "params": count_params(loaded.model), "train_embeddings": embeddings}
        blocks = random_blocks(a.vocab_size, a.seq_len, a.batch_size * (a.warmup_steps + a.timed_steps))
        clock = StepClock()
        cfg = TrainConfig(output_dir=str(out), max_steps=a.warmup_steps + a.timed_steps,
                          per_device_batch_size=a.batch_size, learning_rate=LEARNING_RATE[method], warmup_steps=1,
                          precision=a.precision, logging_steps=1, save_steps=0)
        start = time.perf_counter()
        train(loaded, blocks, cfg, logger=clock)
        info["train_seconds_with_save"] = time.perf_counter() - start
        after = gradient_checkpointing_on(loaded.model)  # Unsloth may switch it on while training starts
        info["gradient_checkpointing"] = after if after is not None else info["gradient_checkpointing"]
        info.update(clock.measure(a.warmup_steps, a.timed_steps, a.batch_size * a.seq_len))
        info.update(memory.result())
    del loaded
    return info


def run_baseline(method: str, a, out: Path, checkpointing: bool) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, Trainer, TrainingArguments, default_data_collator

    embeddings = method == "lora" or (method == "qlora" and a.qlora_embeddings)
    dtype = getattr(torch, a.dtype)
    with Memory(a.device) as memory:
        start = time.perf_counter()
        kwargs = {"dtype": dtype}
        if method == "qlora":
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                               bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
        if a.device == "cuda":
            kwargs["device_map"] = {"": 0}
        model = AutoModelForCausalLM.from_pretrained(a.model_dir, **kwargs)
        model.config.use_cache = False
        if method != "full":
            from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

            if method == "qlora":
                model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
            model = get_peft_model(model, LoraConfig(
                r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=0.0, target_modules="all-linear", bias="none",
                modules_to_save=["embed_tokens", "lm_head"] if embeddings else None,
                ensure_weight_tying=embeddings, task_type="CAUSAL_LM"))
            if checkpointing:
                model.enable_input_require_grads()  # recomputed blocks must see inputs that need grad
        load_seconds = time.perf_counter() - start
        args = TrainingArguments(
            output_dir=str(out), max_steps=a.warmup_steps + a.timed_steps, per_device_train_batch_size=a.batch_size,
            learning_rate=LEARNING_RATE[method], warmup_steps=1, lr_scheduler_type="cosine", optim="adamw_torch",
            bf16=a.precision == "bf16", gradient_checkpointing=checkpointing, logging_steps=1, save_strategy="no",
            gradient_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
            report_to="none", dataloader_num_workers=0, use_cpu=a.device != "cuda", seed=1309, disable_tqdm=True)
        blocks = random_blocks(a.vocab_size, a.seq_len, a.batch_size * (a.warmup_steps + a.timed_steps), labels=True)
        clock = StepClock()
        trainer = Trainer(model=model, args=args, train_dataset=blocks, data_collator=default_data_collator,
                          callbacks=[baseline_callback(clock)])
        info = {"backend": "transformers Trainer + PEFT", "gradient_checkpointing": checkpointing,
                "load_seconds": load_seconds, "params": count_params(model), "train_embeddings": embeddings}
        start = time.perf_counter()
        trainer.train()
        info["train_seconds_with_save"] = time.perf_counter() - start
        info["gradient_checkpointing_effective"] = gradient_checkpointing_on(model)
        info.update(clock.measure(a.warmup_steps, a.timed_steps, a.batch_size * a.seq_len))
        info.update(memory.result())
    # Unsloth patches transformers when imported: the baseline is only plain if it never was.
    info["unsloth_imported"] = "unsloth" in sys.modules
    del trainer, model
    return info


def worker(a) -> int:
    """Run each method of one side in this process, appending one JSON line per method to ``a.results``."""
    import torch

    if a.side == "cptnb":
        logging_setup()
    checkpointing = dict(item.split("=") for item in a.baseline_checkpointing.split(",") if item)
    for method in a.methods.split(","):
        out = Path(tempfile.mkdtemp(prefix=f"tt-{a.side}-{method}-"))
        record = {"side": a.side, "method": method}
        try:
            if a.side == "cptnb":
                record.update(run_cptnb(method, a, out))
            else:
                record.update(run_baseline(method, a, out, checkpointing.get(method, "0") == "1"))
            record["status"] = "ok"
        except Exception as err:  # one method failing must not cost the others
            record.update(status="failed", error=f"{type(err).__name__}: {str(err)[:2000]}",
                          traceback=traceback.format_exc()[-4000:])
            err.__traceback__ = None
            print(record["traceback"], file=sys.stderr)
        finally:
            shutil.rmtree(out, ignore_errors=True)
            gc.collect()
            if a.device == "cuda":
                torch.cuda.empty_cache()
        with open(a.results, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        print(f"[train_throughput] {a.side} {method}: {record['status']} "
              f"{record.get('tokens_per_second', 0):,.0f} tokens/s", flush=True)
    return 0


def logging_setup() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")


# ------------------------------------------------------------------ orchestration and the report


def gpu_facts() -> dict:
    import torch

    facts = {"python": platform.python_version(), "torch": torch.__version__, "cpu": cpu_model(),
             "cuda": torch.version.cuda if torch.cuda.is_available() else None}
    for name in ("transformers", "peft", "trl", "accelerate", "unsloth", "unsloth_zoo", "bitsandbytes", "datasets"):
        try:
            from importlib.metadata import version

            facts[name] = version(name)
        except Exception:
            facts[name] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), gpu_count=torch.cuda.device_count())
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,power.limit",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            facts["nvidia_smi"] = smi.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return facts


def default_batch_size(device: str) -> int:
    """Blocks of 2,048 tokens per step that leave room for the baseline's 128k-vocabulary logits."""
    import torch

    if device != "cuda":
        return 2
    gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    return 8 if gib >= 100 else 4 if gib >= 60 else 2 if gib >= 30 else 1


def spawn_side(side: str, methods: list[str], a, results: Path, logs: Path, timeout_s: float, extra: list[str]) -> str:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--methods", ",".join(methods),
           "--model-dir", a.model_dir, "--results", str(results), "--batch-size", str(a.batch_size),
           "--seq-len", str(a.seq_len), "--warmup-steps", str(a.warmup_steps), "--timed-steps", str(a.timed_steps),
           "--vocab-size", str(a.vocab_size), "--device", a.device, "--dtype", a.dtype, "--precision", a.precision,
           *(["--dry-run"] if a.dry_run else []), *(["--qlora-embeddings"] if a.qlora_embeddings else []), *extra]
    env = dict(os.environ)
    with open(logs / f"throughput_{side}.log", "a", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO),
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=max(10, timeout_s))
            return "ok" if rc == 0 else f"exit {rc}"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker and any compile workers it started
            proc.wait()
            return f"timeout after {timeout_s:.0f} s"


def read_results(path: Path) -> dict[tuple[str, str], dict]:
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {(r["side"], r["method"]): r for r in rows}


def add_flops(record: dict, cfg, seq_len: int, spec_tflops: float | None, measured_tflops: float | None) -> None:
    if record.get("status") != "ok":
        return
    flops = model_flops_per_token(cfg, seq_len, record["method"], record["params"]["lora"],
                                  trained_lm_head=record["method"] != "full" and record["train_embeddings"])
    achieved = record["tokens_per_second"] * flops["flops"] / 1e12
    record.update(model_flops_per_token=flops["flops"], flops_formula=flops["formula"], achieved_tflops=achieved,
                  mfu_vs_spec=achieved / spec_tflops if spec_tflops else None,
                  mfu_vs_measured_matmul=achieved / measured_tflops if measured_tflops else None,
                  mfu_6n_convention_vs_spec=(record["tokens_per_second"] * flops["six_n_flops"] / 1e12 / spec_tflops
                                             if spec_tflops else None))


def comparisons(rows: dict[tuple[str, str], dict]) -> dict:
    """The three goals of issue #14, each as a number (None where a side is missing)."""
    def ok(side, method):
        r = rows.get((side, method))
        return r if r and r.get("status") == "ok" else None

    out = {}
    full = ok("cptnb", "full")
    out["full_mfu_vs_spec"] = full.get("mfu_vs_spec") if full else None
    lora_c, lora_b = ok("cptnb", "lora"), ok("baseline", "lora")
    out["lora_speedup_vs_baseline"] = lora_c["tokens_per_second"] / lora_b["tokens_per_second"] if lora_c and lora_b else None
    q_c = ok("cptnb", "qlora")
    mem = "peak_allocated_gib"
    out["qlora_memory_vs_baseline_lora"] = q_c[mem] / lora_b[mem] if q_c and lora_b and mem in q_c else None
    for method in METHODS:
        c, b = ok("cptnb", method), ok("baseline", method)
        out[f"{method}_tokens_per_second_ratio"] = c["tokens_per_second"] / b["tokens_per_second"] if c and b else None
    return out


def _fmt(value, spec: str = ",.0f", missing: str = "—") -> str:
    return missing if value is None else format(value, spec)


def write_markdown(report: dict, path: Path) -> None:
    m = report["machine"]
    lines = [f"# Training throughput: {report['shape']['name']}, cptnb vs transformers Trainer + PEFT", "",
             f"Run {report['finished_utc']} on {m.get('gpu') or 'CPU (' + m['cpu'] + ')'}"
             f"{' (dry run: tiny shapes, CPU)' if report['dry_run'] else ''}; torch {m['torch']}, transformers "
             f"{m['transformers']}, peft {m['peft']}, trl {m['trl']}, unsloth {m['unsloth']}, bitsandbytes {m['bitsandbytes']}.",
             f"Command: `{report['command']}`", "",
             f"Sequence {report['seq_len']} tokens, batch {report['batch_size']} blocks ({report['tokens_per_step']:,} tokens "
             f"per step), {report['warmup_steps']} warm-up + {report['timed_steps']} timed steps, {report['precision']}; "
             f"{report['shape']['parameters']:,} parameters, random weights, random packed tokens.", "",
             f"Peak dense matmul: spec {_fmt(report['spec_tflops'], '.0f')} TFLOP/s; measured here "
             f"{_fmt(report['matmul']['tflops'], '.4g')} TFLOP/s ({report['matmul']['dtype']}, "
             f"{report['matmul']['size']}³).", "",
             "| method | side | backend | grad. ckpt | tokens/s | s/step | model TFLOP/token-step | MFU vs spec | "
             "MFU vs measured matmul | peak GPU GiB | status |",
             "| --- | --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | --- |"]
    for method in METHODS:
        for side in SIDES:
            r = report["results"].get(f"{side}/{method}")
            if r is None:
                continue
            if r.get("status") != "ok":
                lines.append(f"| {method} | {side} | | | | | | | | | {r.get('status')}: {r.get('error', '')[:120]} |")
                continue
            lines.append(
                f"| {method} | {side} | {r['backend']} | {r['gradient_checkpointing']} | {_fmt(r['tokens_per_second'])} | "
                f"{r['seconds_per_step']:.3f} | {r['flops_formula']} | {_fmt(r['mfu_vs_spec'], '.1%')} | "
                f"{_fmt(r['mfu_vs_measured_matmul'], '.1%')} | {_fmt(r.get('peak_allocated_gib'), '.2f')} | ok |")
    c = report["comparisons"]
    lines += ["", "| goal (issue #14) | measured |", "| --- | ---: |",
              f"| full CPT MFU vs spec >= 40% (stretch 50%) | {_fmt(c['full_mfu_vs_spec'], '.1%')} |",
              f"| LoRA + embeddings: cptnb tokens/s >= 1.5x baseline | {_fmt(c['lora_speedup_vs_baseline'], '.2f')}x |",
              f"| QLoRA peak memory <= 50% of baseline bf16 LoRA | {_fmt(c['qlora_memory_vs_baseline_lora'], '.1%')} |", ""]
    lines += [f"- {note}" for note in report["notes"]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def orchestrate(a) -> int:
    import torch

    started = time.monotonic()
    deadline = started + a.budget_s
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    if not cuda and not a.dry_run:
        print("no CUDA GPU: run with --dry-run for the CPU check of this script", file=sys.stderr)
        return 2
    a.device = "cuda" if cuda and not a.dry_run else "cpu"
    a.dtype, a.precision = ("bfloat16", "bf16") if a.device == "cuda" else ("float32", "fp32")
    cfg = llama32_1b_config() if not a.dry_run else tiny_config()
    full_shape = llama32_1b_config()
    a.vocab_size = cfg.vocab_size
    a.batch_size = a.batch_size or default_batch_size(a.device)
    notes = []
    methods = [m for m in a.methods.split(",") if m]
    if a.device != "cuda" and "qlora" in methods:
        notes.append("qlora runs through bitsandbytes' CPU 4-bit path here; its speed and memory mean nothing for a GPU")
    with torch.device("meta"):  # the 1B shape is counted even in a dry run, so a typo in it shows there
        from transformers import LlamaForCausalLM

        shape_params = sum(p.numel() for p in {id(p): p for p in LlamaForCausalLM(full_shape).parameters()}.values())
    work = Path(tempfile.mkdtemp(prefix="cptnb-throughput-", dir=a.work_dir or None))
    a.model_dir = str(work / "model")
    try:
        built = build_model_folder(cfg, Path(a.model_dir), a.device, a.dtype)
        matmul = measure_matmul_tflops(a.device, a.dtype, 8192 if a.device == "cuda" else 256,
                                       100 if a.device == "cuda" else 20)
        if a.device == "cuda":
            torch.cuda.empty_cache()  # the workers get the whole GPU
        gpu_name = torch.cuda.get_device_name(0) if a.device == "cuda" else ""
        spec = SPEC_BF16_DENSE_TFLOPS if a.device == "cuda" else None
        if a.device == "cuda" and not any(k in gpu_name for k in ("H100", "H200", "GH200")):
            notes.append(f"{gpu_name} is not an H100/H200: 'MFU vs spec' still divides by 989 TFLOP/s; "
                         "read 'MFU vs measured matmul' for this GPU")
        logs = out / "train_throughput_logs"
        logs.mkdir(exist_ok=True)
        results = logs / "rows.jsonl"
        results.unlink(missing_ok=True)
        sides = [s for s in a.sides.split(",") if s]
        side_status = {}
        for i, side in enumerate(sides):
            extra = []
            if side == "baseline":
                done = read_results(results)
                flags = []
                for m in methods:  # the baseline recomputes activations exactly where cptnb's side does
                    c = done.get(("cptnb", m), {}).get("gradient_checkpointing")
                    on = c if isinstance(c, bool) else m != "full"
                    flags.append(f"{m}={int(on)}")
                extra = ["--baseline-checkpointing", ",".join(flags)]
            for _attempt in range(2):  # a crashed process (not a failed method) is restarted once for what is left
                left = [m for m in methods if (side, m) not in read_results(results)]
                if not left:
                    break
                share = (deadline - time.monotonic()) / (len(sides) - i)
                side_status[side] = spawn_side(side, left, a, results, logs, share, extra)
                if side_status[side].startswith("timeout"):
                    break
        rows = read_results(results)
        for side in sides:
            for m in methods:
                if (side, m) not in rows:
                    rows[(side, m)] = {"side": side, "method": m, "status": "not run",
                                       "error": f"process: {side_status.get(side)}; see train_throughput_logs/throughput_{side}.log"}
        for r in rows.values():
            add_flops(r, cfg, a.seq_len, spec, matmul["tflops"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    notes += [
        "tokens/s counts the timed steps only; each log event reads the loss, which waits for the GPU, on both sides.",
        "Peak GPU memory is torch's max_memory_allocated from before the model load to the end of training, net of what "
        "was allocated before; reserved memory is in the JSON.",
        "MFU uses the method's model FLOPs (recomputation for gradient checkpointing not counted); the JSON also has "
        "mfu_6n_convention_vs_spec (6N + attention for every method, as often quoted for LoRA).",
        "The baseline recomputes activations (gradient checkpointing) where cptnb's side does, so both train in the "
        "same memory regime; cptnb's LoRA/QLoRA use Unsloth's offloaded checkpointing on a GPU.",
    ]
    report = {
        "benchmark": "train_throughput", "dry_run": a.dry_run, "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "finished_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "wall_seconds": time.monotonic() - started,
        "machine": gpu_facts(), "shape": {"name": "tiny Llama (dry run)" if a.dry_run else "Llama-3.2-1B shape",
                                          "parameters": built["parameters"], "config": cfg.to_dict(),
                                          "llama32_1b_parameters": shape_params},
        "model_build": built, "seq_len": a.seq_len, "batch_size": a.batch_size,
        "tokens_per_step": a.batch_size * a.seq_len, "warmup_steps": a.warmup_steps, "timed_steps": a.timed_steps,
        "precision": a.precision, "spec_tflops": spec, "matmul": matmul,
        "results": {f"{s}/{m}": r for (s, m), r in sorted(rows.items())}, "notes": notes,
    }
    report["comparisons"] = comparisons(rows)
    (out / "train_throughput.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    write_markdown(report, out / "train_throughput.md")
    print((out / "train_throughput.md").read_text(encoding="utf-8"))
    failed = [k for k, r in report["results"].items() if r.get("status") != "ok"]
    return 1 if failed else 0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes: checks the script, measures nothing real")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of full,lora,qlora")
    p.add_argument("--sides", default=",".join(SIDES), help="comma-separated subset of cptnb,baseline")
    p.add_argument("--batch-size", type=int, default=0, help="blocks per step; 0 picks from the GPU's memory (8 on 141 GB)")
    p.add_argument("--seq-len", type=int, default=0, help="tokens per block (default 2048; 64 in a dry run)")
    p.add_argument("--warmup-steps", type=int, default=0, help="untimed steps first (default 4; 1 in a dry run)")
    p.add_argument("--timed-steps", type=int, default=0, help="timed steps (default 16; 2 in a dry run)")
    p.add_argument("--qlora-embeddings", action="store_true", help="also train the embeddings in qlora")
    p.add_argument("--budget-s", type=float, default=300.0, help="wall-clock budget for both sides, in seconds")
    p.add_argument("--out", default="", help="report folder (default benchmarks/results, or a temp dir in a dry run)")
    p.add_argument("--work-dir", default="", help="where the random model folder is written (default: the temp dir)")
    # Internal: one side in its own process.
    p.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--results", help=argparse.SUPPRESS)
    p.add_argument("--vocab-size", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="bfloat16", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="bf16", help=argparse.SUPPRESS)
    p.add_argument("--baseline-checkpointing", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.seq_len = a.seq_len or (64 if a.dry_run else 2048)
    a.warmup_steps = a.warmup_steps or (1 if a.dry_run else 4)
    a.timed_steps = a.timed_steps or (2 if a.dry_run else 16)
    if not a.out and a.worker is None:
        a.out = tempfile.mkdtemp(prefix="train-throughput-") if a.dry_run else str(REPO / "benchmarks" / "results")
    return a


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    a = parse_args(argv)
    if a.worker:
        a.side = a.worker
        return worker(a)
    return orchestrate(a)


if __name__ == "__main__":
    sys.exit(main())
