"""GPU tier for issue #21: one assertion per defect of the GPU path found by reading the pinned libraries.

Two child processes measure everything, at the same time, on a small random Llama (2 layers, head_dim 64,
tiny-llama's tokenizer) built once in a temporary folder:

* ``unsloth`` imports Unsloth (which patches transformers, PEFT and TRL globally, hence a fresh process):
  a full load then a LoRA load in one process, 4 steps with trained embeddings under bf16 weights, 4 steps
  of a model loaded for 64-token blocks whose long documents are then scored, blocks longer than the model
  was loaded for, and saves the adapter;
* ``plain`` never imports Unsloth: task scoring with and without the shared KV cache, fp16 steps with trained
  embeddings and with ``full`` on the transformers backend, QLoRA through bitsandbytes, one process that
  counts two GPUs, and, once ``unsloth`` has saved its adapter, the same long documents scored by a separately
  loaded fp32 model.

Each child writes one JSON file; each test below asserts one finding from it. The CPU tests of the same
causes are in ``tests/unit/test_gpu_path_defects.py``. ``python tests/gpu/test_gpu_findings.py DIR`` runs
both children and prints their results (on a CPU the CUDA-only steps record why they could not run).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

HERE = Path(__file__).resolve()
REPO = HERE.parents[2]
PHASE_TIMEOUT_S = 240
LONG_WINDOW, LONG_STRIDE, SHORT_LIMIT = 256, 128, 64  # scoring windows four times the block the model loaded for
NATS_TOLERANCE = 1e-3
SMALL_LLAMA = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=64, max_position_embeddings=2048, tie_word_embeddings=True)


# ------------------------------------------------------------------ what the children share


def build_small_llama(folder: Path) -> Path:
    """A random Llama of SMALL_LLAMA's shape with tiny-llama's tokenizer, saved in fp32 (once)."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from cptnb.config import ModelConfig
    from cptnb.models.loading import resolve_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_source(ModelConfig(name="tiny-llama")))
    torch.manual_seed(1309)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **SMALL_LLAMA)
    LlamaForCausalLM(config).to(torch.float32).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def long_documents(tokenizer, n: int = 4) -> list[str]:
    """The ``n`` longest Vietnamese held-out documents: each spans several LONG_WINDOW windows."""
    from cptnb.data import read_documents
    from cptnb.paths import data_samples_dir

    texts = [d.text for d in read_documents([data_samples_dir() / "heldout" / "vi_heldout.jsonl"])]
    return sorted(texts, key=lambda t: -len(tokenizer(t, add_special_tokens=False)["input_ids"]))[:n]


def training_blocks(tokenizer, block_tokens: int):
    from cptnb.data import clean_documents, pack_documents, read_documents
    from cptnb.paths import data_samples_dir

    docs = list(clean_documents(read_documents([data_samples_dir() / "vi"])))[:40]
    return pack_documents(docs, tokenizer, block_tokens).dataset


def trainable_dtypes(model) -> list[str]:
    return sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.requires_grad})


def share_changed(before, after) -> float:
    """Share of elements of ``after`` that differ from the ``before`` snapshot (both compared as fp32)."""
    return float((after.detach().float().cpu() != before).float().mean())


def picks(items: list[dict]) -> list[tuple[int, int, int]]:
    """Per item, the choice picked by acc, acc_norm and acc_bytes (from its log-likelihoods and choice texts)."""
    out = []
    for item in items:
        lls, texts = item["loglikelihoods"], item["choice_texts"]
        best = [max(range(len(lls)), key=lambda i, v=values: (v[i], -i)) for values in
                (lls, [ll / len(t) for ll, t in zip(lls, texts)], [ll / len(t.encode()) for ll, t in zip(lls, texts)])]
        out.append(tuple(best))
    return out


class Steps:
    """Runs named steps, recording each one's result or its traceback, and writes them all to one JSON file."""

    def __init__(self, path: Path):
        self.path, self.results = path, {}

    def run(self, name: str, fn, *args):
        started = time.monotonic()
        try:
            result = fn(*args)
        except Exception as err:  # one failing step must not hide the others
            result = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
        result["seconds"] = round(time.monotonic() - started, 1)
        self.results[name] = result
        self.path.write_text(json.dumps(self.results, indent=1, default=str))
        return result


def _train(loaded, blocks, out: Path, steps: int, **cfg):
    from cptnb.config import TrainConfig
    from cptnb.train.trainer import train

    settings = dict(output_dir=str(out), max_steps=steps, per_device_batch_size=2, warmup_steps=0,
                    lr_scheduler="constant", save_steps=0, **cfg)
    return train(loaded, blocks, TrainConfig(**settings))


# ------------------------------------------------------------------ child 1: through Unsloth


def unsloth_phase(model_dir: Path, out: Path) -> None:
    import torch

    from cptnb.config import ModelConfig
    from cptnb.evaluate.perplexity import score_texts
    from cptnb.models.loading import load_model, truncation_limit

    steps = Steps(out / "unsloth.json")
    name = str(model_dir)

    def full_then_lora():  # findings 6 and 7c: the flag a full load leaves must not strip the next load's adapters
        full = load_model(ModelConfig(name=name, method="full", backend="unsloth", dtype="bf16"))
        result = {"full_backend": full.backend, "full_trainable_dtypes": trainable_dtypes(full.model),
                  "flag_after_full": os.environ.get("UNSLOTH_ENABLE_FULL_FINETUNING")}
        del full
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        lora = load_model(ModelConfig(name=name, method="lora", train_embeddings=True, backend="unsloth", dtype="bf16"))
        model = lora.model
        result.update(lora_weights=sum("lora_" in n for n in lora.trainable_names),
                      flag_after_lora=os.environ.get("UNSLOTH_ENABLE_FULL_FINETUNING"),
                      tied=model.get_output_embeddings().weight is model.get_input_embeddings().weight)
        # Finding 3: 4 steps at an embedding rate of 2e-5 (learning_rate 2e-4 / 10) under bf16 weights.
        embedding = model.get_input_embeddings().weight
        before = embedding.detach().float().cpu().clone()
        trained = _train(lora, training_blocks(lora.tokenizer, SHORT_LIMIT), out / "bf16_run", 4, learning_rate=2e-4)
        after = model.get_input_embeddings().weight
        result.update(steps=trained.steps, embedding_dtype_after=str(after.dtype).removeprefix("torch."),
                      trainable_dtypes_after=trainable_dtypes(model),
                      embedding_share_changed=share_changed(before, after),
                      embedding_learning_rate=2e-5)
        return result

    def long_documents_through_the_trained_model():  # finding 1
        loaded = load_model(ModelConfig(name=name, method="lora", train_embeddings=True, backend="unsloth",
                                        dtype="fp32", max_seq_len_tokens=SHORT_LIMIT))
        model, tok = loaded.model, loaded.tokenizer
        trained = _train(loaded, training_blocks(tok, SHORT_LIMIT), out / "fp32_run", 4, learning_rate=1e-3)
        texts = long_documents(tok)
        ids = torch.tensor([tok(texts[0], add_special_tokens=False)["input_ids"][:LONG_WINDOW]])
        model.eval()
        with torch.no_grad():  # the cut this finding is about: a plain forward of a long input
            raw_len = int(model(input_ids=ids.to(model.get_input_embeddings().weight.device)).logits.shape[1])
        score = score_texts(model, tok, texts, window_tokens=LONG_WINDOW, stride_tokens=LONG_STRIDE, batch_size=2)
        return {"backend": loaded.backend, "steps": trained.steps, "adapter": str(trained.final_dir),
                "limit": truncation_limit(model), "raw_forward_positions": raw_len, "input_positions": LONG_WINDOW,
                "limit_after_scoring": truncation_limit(model), "loss": score.loss, "tokens": score.tokens}

    def blocks_longer_than_the_limit():  # finding 7a
        from cptnb.errors import ConfigError

        loaded = load_model(ModelConfig(name=name, method="lora", backend="unsloth", max_seq_len_tokens=32))
        try:
            _train(loaded, training_blocks(loaded.tokenizer, SHORT_LIMIT), out / "too_long", 2)
        except ConfigError as err:
            return {"refused": True, "message": str(err)}
        return {"refused": False}

    steps.run("full_then_lora", full_then_lora)
    steps.run("long_documents", long_documents_through_the_trained_model)
    steps.run("block_length", blocks_longer_than_the_limit)
    steps.run("done", lambda: {})


# ------------------------------------------------------------------ child 2: plain transformers, no Unsloth


def plain_phase(model_dir: Path, out: Path) -> None:
    from cptnb.config import ModelConfig
    from cptnb.models.loading import load_for_eval, load_model

    steps = Steps(out / "plain.json")
    name = str(model_dir)

    def task_picks():  # finding 4
        from cptnb.evaluate.scoring import evaluate_tasks
        from cptnb.evaluate.tasks import load_tasks

        model, tok = load_for_eval(name)
        tasks = [t for t in load_tasks(REPO / "data_samples" / "eval") if t.kind != "lambada"]
        result = {"device": str(next(model.parameters()).device), "dtype": str(next(model.parameters()).dtype)}
        scored = {}
        for share in (True, False):
            done = evaluate_tasks(model, tok, tasks, batch_size=8, limit=12, share_context=share)
            scored[share] = {n: r.items for n, r in done.items()}
        choices = {t.name: _choice_texts(t, 12) for t in tasks}
        differing, largest = [], 0.0
        for task, items in scored[True].items():
            for a, b, texts in zip(items, scored[False][task], choices[task]):
                a, b = dict(a, choice_texts=texts), dict(b, choice_texts=texts)
                largest = max(largest, max(abs(x - y) for x, y in zip(a["loglikelihoods"], b["loglikelihoods"])))
                if picks([a]) != picks([b]):
                    differing.append(f"{task}/{a['id']}")
        result.update(items=sum(len(v) for v in scored[True].values()), differing_picks=differing,
                      largest_loglikelihood_difference=largest)
        return result

    def fp16_steps():  # finding 2
        result = {}
        for method in ("lora", "full"):
            loaded = load_model(ModelConfig(name=name, method=method, train_embeddings=method == "lora",
                                            backend="transformers", dtype="fp16"))
            trained = _train(loaded, training_blocks(loaded.tokenizer, SHORT_LIMIT), out / f"fp16_{method}", 2,
                             precision="fp16", learning_rate=1e-4)
            result[method] = {"steps": trained.steps, "loss": trained.final_train_loss,
                              "trainable_dtypes": trainable_dtypes(loaded.model)}
        return result

    def qlora_through_bitsandbytes():  # the path auto never takes where Unsloth is installed
        loaded = load_model(ModelConfig(name=name, method="qlora", backend="transformers"))
        kinds = sorted({type(m).__name__ for m in loaded.model.modules() if "4bit" in type(m).__name__})
        trained = _train(loaded, training_blocks(loaded.tokenizer, SHORT_LIMIT), out / "qlora", 2, learning_rate=1e-3)
        return {"backend": loaded.backend, "kinds": kinds, "steps": trained.steps, "loss": trained.final_train_loss}

    def two_gpus_one_process():  # finding 5
        import trl

        from cptnb.train.trainer import one_device_per_process  # noqa: F401 - the fix under test

        original = trl.SFTConfig
        trl.SFTConfig = _two_gpu_config(original)
        try:
            loaded = load_model(ModelConfig(name=name, method="lora", backend="transformers"))
            trained = _train(loaded, training_blocks(loaded.tokenizer, SHORT_LIMIT), out / "two_gpus", 2)
        finally:
            trl.SFTConfig = original
        return {"steps": trained.steps, "device": str(next(loaded.model.parameters()).device)}

    def fp32_reference():  # finding 1, the other side: wait for the Unsloth child's adapter
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        while time.monotonic() < deadline:
            done = out / "unsloth.json"
            if done.is_file() and "done" in json.loads(done.read_text() or "{}"):
                break
            time.sleep(1)
        long = json.loads((out / "unsloth.json").read_text())["long_documents"]
        if "adapter" not in long:
            return {"error": "the Unsloth child saved no adapter: " + long.get("error", "")}
        from cptnb.evaluate.perplexity import score_texts

        model, tok = load_for_eval(name, adapter=long["adapter"], dtype="fp32")
        score = score_texts(model, tok, long_documents(tok), window_tokens=LONG_WINDOW, stride_tokens=LONG_STRIDE,
                            batch_size=2)
        return {"dtype": str(next(model.parameters()).dtype), "loss": score.loss, "tokens": score.tokens}

    steps.run("task_picks", task_picks)
    steps.run("fp16_steps", fp16_steps)
    steps.run("qlora", qlora_through_bitsandbytes)
    steps.run("two_gpus", two_gpus_one_process)
    steps.run("fp32_reference", fp32_reference)
    steps.run("unsloth_imported", lambda: {"value": "unsloth" in sys.modules})


def _choice_texts(task, limit: int) -> list[list[str]]:
    from cptnb.evaluate.tasks import fewshot_plan

    return [item["choices"]["text"] for item, _ in fewshot_plan(task, limit)]


def _two_gpu_config(base):
    class TwoGpus(base):
        """SFTConfig as transformers builds it in one process that sees two GPUs (training_args.py 1917)."""

        def __post_init__(self):
            super().__post_init__()
            _ = self.device
            self._n_gpu = 2

    TwoGpus.__module__, TwoGpus.__qualname__ = __name__, "TwoGpus"
    globals()["TwoGpus"] = TwoGpus  # picklable by name, as the Trainer's argument copies need
    return TwoGpus


# ------------------------------------------------------------------ running both children


def run_children(out: Path) -> dict[str, dict]:
    """Build the model, run both children at once, return {child: {step: result}} plus their log tails."""
    out.mkdir(parents=True, exist_ok=True)
    model_dir = build_small_llama(out / "small-llama")
    # Fresh processes: nothing Unsloth or its trainer wrote into this one's environment (an earlier GPU test may
    # have imported it here: UNSLOTH_*, ACCELERATE_MIXED_PRECISION) and no launcher's WORLD_SIZE.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("UNSLOTH_") and k not in ("ACCELERATE_MIXED_PRECISION", "WORLD_SIZE")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", UNSLOTH_DISABLE_STATISTICS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    children = {}
    for child in ("unsloth", "plain"):
        log = open(out / f"{child}.log", "w")
        children[child] = (subprocess.Popen([sys.executable, str(HERE), "--child", child, str(model_dir), str(out)],
                                            env=env, cwd=out, stdout=log, stderr=subprocess.STDOUT), log)
    results = {}
    for child, (proc, log) in children.items():
        try:
            proc.wait(timeout=PHASE_TIMEOUT_S + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        path = out / f"{child}.json"
        results[child] = json.loads(path.read_text()) if path.is_file() else {}
        results[child]["_log_tail"] = (out / f"{child}.log").read_text(errors="replace")[-4000:]
        results[child]["_returncode"] = proc.returncode
    return results


@pytest.fixture(scope="module")
def findings(tmp_path_factory):
    return run_children(tmp_path_factory.mktemp("gpu_findings"))


def _step(findings, child: str, step: str) -> dict:
    result = findings[child].get(step)
    assert result is not None, f"{child} child did not reach {step!r} (rc {findings[child]['_returncode']}):\n" \
                               f"{findings[child]['_log_tail']}"
    assert "error" not in result, f"{child}/{step}: {result['error']}\n{result.get('traceback', '')}"
    return result


# ------------------------------------------------------------------ the assertions, one per finding


def test_long_documents_through_the_trained_unsloth_model_match_a_separate_fp32_model(findings):
    """Finding 1: Unsloth cuts inputs to max_seq_length; scoring lifts it, so nothing is cut."""
    long = _step(findings, "unsloth", "long_documents")
    reference = _step(findings, "plain", "fp32_reference")
    assert long["backend"] == "unsloth" and long["steps"] == 4
    assert long["limit"] == SHORT_LIMIT and long["limit_after_scoring"] == SHORT_LIMIT
    assert reference["dtype"] == "torch.float32"
    assert long["tokens"] == reference["tokens"]
    assert abs(long["loss"] - reference["loss"]) < NATS_TOLERANCE, (
        f"{long['loss']:.6f} through Unsloth vs {reference['loss']:.6f} in fp32 (a plain forward of "
        f"{long['input_positions']} tokens returned {long['raw_forward_positions']} positions)")


def test_fp16_steps_with_trained_embeddings_and_full_on_the_transformers_backend(findings):
    """Finding 2: fp16 weights, fp16 mixed precision: the gradient scaler needs fp32 trainable tensors."""
    result = _step(findings, "plain", "fp16_steps")
    for method in ("lora", "full"):
        assert result[method]["steps"] == 2 and math.isfinite(result[method]["loss"]), result
        assert result[method]["trainable_dtypes"] == ["float32"], result


def test_trainable_dtype_and_share_of_embedding_elements_changed_after_4_steps(findings):
    """Finding 3: trained embeddings under bf16 weights keep an fp32 master copy, so small updates land."""
    result = _step(findings, "unsloth", "full_then_lora")
    assert result["steps"] == 4
    assert result["full_trainable_dtypes"] == ["float32"], result
    assert result["trainable_dtypes_after"] == ["float32"] and result["embedding_dtype_after"] == "float32", result
    assert result["embedding_share_changed"] > 0.9, result  # in bf16 a few percent change at this rate


def test_task_picks_identical_between_shared_context_and_plain_scoring(findings):
    """Finding 4: evaluation keeps the checkpoint's fp32, as lm-eval's dtype=auto, and no pick differs."""
    result = _step(findings, "plain", "task_picks")
    assert result["device"].startswith("cuda") and result["dtype"] == "torch.float32", result
    assert result["items"] > 0 and result["differing_picks"] == [], result


def test_one_process_that_sees_two_gpus_trains_on_one(findings):
    """Finding 5: transformers would wrap the model in nn.DataParallel, which TRL refuses."""
    result = _step(findings, "plain", "two_gpus")
    assert result["steps"] == 2 and result["device"].startswith("cuda"), result


def test_full_then_lora_in_one_process_keeps_the_adapters_and_the_tie(findings):
    """Finding 6 (and 7c): the full-finetuning flag is reset per load; tied embeddings stay tied."""
    result = _step(findings, "unsloth", "full_then_lora")
    assert result["full_backend"] == "unsloth" and result["flag_after_full"] == "1", result
    assert result["lora_weights"] > 0 and result["flag_after_lora"] == "0", result
    assert result["tied"] is True, result


def test_blocks_longer_than_the_model_was_loaded_for_are_refused(findings):
    """Finding 7a: Unsloth would cut every 64-token block to 32 tokens without a word."""
    result = _step(findings, "unsloth", "block_length")
    assert result["refused"] and "data.block_tokens" in result["message"], result
    assert "model.max_seq_len_tokens" in result["message"], result


def test_qlora_through_transformers_and_bitsandbytes_trains(findings):
    """With Unsloth installed, backend=auto never takes this path; forced here, it must train."""
    result = _step(findings, "plain", "qlora")
    assert result["backend"] == "transformers" and "Linear4bit" in result["kinds"], result
    assert result["steps"] == 2 and math.isfinite(result["loss"]), result
    assert _step(findings, "plain", "unsloth_imported")["value"] is False  # the plain child stayed plain


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        sys.path.insert(0, str(REPO))
        child, model_path, out_dir = sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
        (unsloth_phase if child == "unsloth" else plain_phase)(model_path, out_dir)
    elif len(sys.argv) == 2:
        print(json.dumps({c: {k: v for k, v in r.items() if k != "_log_tail"} for c, r in
                          run_children(Path(sys.argv[1])).items()}, indent=1, default=str))
    else:
        sys.exit("usage: python tests/gpu/test_gpu_findings.py OUT_DIR")
