"""Issue #21: defects of the GPU path found by reading the pinned libraries, each reached here on the CPU.

No GPU runs in ``make test``, so each test reaches the cause, not the GPU symptom: a half-precision model
loaded on the CPU (finding 2/3), a model that cuts its inputs the way Unsloth's patched forward does
(finding 1), a checkpoint whose dtype lm-eval would keep (finding 4), training arguments that count two
GPUs (finding 5), Unsloth's CPU fallback loading full and then LoRA in one process (finding 6, 7c), and
the errors a load can raise (finding 7b). ``tests/gpu/test_gpu_findings.py`` asserts the GPU symptoms.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types

import pytest
import torch
import trl

from cptnb.config import ModelConfig, TrainConfig
from cptnb.data import pack_documents
from cptnb.errors import ConfigError, ModelNotAvailableError
from cptnb.evaluate.perplexity import score_texts
from cptnb.evaluate.scoring import loglikelihoods
from cptnb.models import loading
from cptnb.models.loading import load_for_eval
from cptnb.train.trainer import train


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The CPU is shared; one thread keeps these tiny forward passes fast and steady.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def blocks(tiny, vi_docs):
    return pack_documents(vi_docs[:40], tiny(method="full").tokenizer, 64).dataset


def _trainable(model) -> dict[str, torch.dtype]:
    return {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}


# ------------------------------------------------------------ findings 2 and 3: fp32 master weights


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("method", ["lora", "full"])
def test_trainable_parameters_are_fp32_under_half_precision_weights(tiny, dtype, method):
    # PEFT upcasts only adapter layers (peft/tuners/tuners_utils.py cast_adapter_dtype), so embedding copies and
    # full training stayed fp16/bf16: the fp16 gradient scaler refuses them, bf16 rounds small updates away.
    loaded = tiny(method=method, train_embeddings=method == "lora", dtype=dtype)
    half = torch.bfloat16 if dtype == "bf16" else torch.float16
    trainable = _trainable(loaded.model)
    not_fp32 = {n: d for n, d in trainable.items() if d != torch.float32}
    assert trainable and not not_fp32, not_fp32
    if method == "lora":  # the frozen base keeps the dtype asked for: that is the memory the user chose
        frozen = {p.dtype for p in loaded.model.parameters() if not p.requires_grad}
        assert frozen == {half}
        model = loaded.model
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied
    # The mixed model still runs without autocast (evaluation, generation): the fp32 copies cast at their edges.
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        logits = loaded.model(input_ids=ids).logits
    assert torch.isfinite(logits.float()).all()


def test_trained_embeddings_keep_small_updates_under_bf16_weights(tiny, blocks, tmp_path):
    """4 steps at the embedding rate of 2e-6: with an fp32 master nearly every element moves, in bf16 almost none."""
    loaded = tiny(method="lora", train_embeddings=True, dtype="bf16")
    embedding = loaded.model.get_input_embeddings().weight
    before = embedding.detach().float().clone()
    cfg = TrainConfig(output_dir=str(tmp_path), max_steps=4, per_device_batch_size=2, learning_rate=2e-5,
                      warmup_steps=0, lr_scheduler="constant")
    result = train(loaded, blocks, cfg)
    assert result.steps == 4
    after = loaded.model.get_input_embeddings().weight
    assert after.dtype == torch.float32
    changed = float((after.detach().float() != before).float().mean())
    # The tied lm_head gives every row a gradient, and Adam moves every element that has one.
    assert changed > 0.9, f"only {changed:.1%} of embedding elements changed"


# ------------------------------------------------------------ finding 1: a model that cuts its inputs


def _cut_like_unsloth(model, limit: int):
    """Make ``model`` behave like an Unsloth model loaded with ``max_seq_length=limit``.

    Unsloth records the limit on every module (unsloth/models/llama.py 4468-4475) and its patched decoder
    forward cuts ``input_ids`` and the attention mask to ``self.max_seq_length`` (llama.py 1359-1371).
    """
    for module in model.modules():
        module.max_seq_length = limit
    decoder = model.get_base_model().model if hasattr(model, "get_base_model") else model.model

    def cut(module, args, kwargs):
        n = module.max_seq_length
        for key in ("input_ids", "attention_mask"):
            if kwargs.get(key) is not None and kwargs[key].shape[-1] > n:
                kwargs[key] = kwargs[key][..., :n]
        return args, kwargs

    return decoder.register_forward_pre_hook(cut, with_kwargs=True)


LONG = " ".join(["Hà Nội mùa thu, cây cơm nguội vàng, gió heo may thổi nhẹ qua những con phố cũ."] * 6)


def test_scoring_a_model_that_cuts_its_inputs_scores_every_window_whole(tiny):
    loaded = tiny(method="lora")
    model, tok = loaded.model, loaded.tokenizer
    assert len(tok(LONG)["input_ids"]) > 100
    reference = score_texts(model, tok, [LONG], window_tokens=96, stride_tokens=48, progress=False)
    handle = _cut_like_unsloth(model, 16)
    try:
        cut = score_texts(model, tok, [LONG], window_tokens=96, stride_tokens=48, progress=False)
        assert all(m.max_seq_length == 16 for m in model.modules())  # the model's own limit is back after scoring
    finally:
        handle.remove()
    assert cut.tokens == reference.tokens
    assert cut.loss == pytest.approx(reference.loss, abs=1e-6)


def test_the_limit_a_model_cuts_its_inputs_to_is_read_from_its_modules(tiny):
    model = tiny(method="lora").model
    assert loading.truncation_limit(model) is None  # plain transformers cuts nothing
    handle = _cut_like_unsloth(model, 16)
    try:
        assert loading.truncation_limit(model) == 16
        with loading.inputs_up_to(model, 96):
            assert loading.truncation_limit(model) == 96
        assert loading.truncation_limit(model) == 16
    finally:
        handle.remove()
        for module in model.modules():
            del module.max_seq_length


@pytest.mark.parametrize("share_context", [True, False])
def test_task_scoring_a_model_that_cuts_its_inputs_sees_whole_contexts(tiny, share_context):
    loaded = tiny(method="lora")
    model, tok = loaded.model, loaded.tokenizer
    requests = [(LONG + " Câu hỏi: mùa nào?\nĐáp án:", [" mùa thu", " mùa hè", " mùa đông"])]
    reference = loglikelihoods(model, tok, requests, share_context=share_context)
    handle = _cut_like_unsloth(model, 16)
    try:
        cut = loglikelihoods(model, tok, requests, share_context=share_context)
    finally:
        handle.remove()
    assert [ll for ll, _ in cut[0]] == pytest.approx([ll for ll, _ in reference[0]], abs=1e-4)


def test_scoring_sends_inputs_to_the_trained_embedding_not_to_the_first_parameter(tiny):
    # With trained embeddings Unsloth moves the frozen original embedding off the GPU (unsloth/models/_utils.py
    # 5242-5248) and PEFT lists it first; "meta" stands in for that other device here.
    loaded = tiny(method="lora", train_embeddings=True)
    model, tok = loaded.model, loaded.tokenizer
    requests = [(LONG[:200], [" mùa thu", " mùa hè"])]
    reference = score_texts(model, tok, [LONG], window_tokens=96, stride_tokens=48, progress=False)
    reference_lls = loglikelihoods(model, tok, requests)
    model.get_input_embeddings().original_module.to("meta")
    assert next(model.parameters()).device.type == "meta"
    assert score_texts(model, tok, [LONG], window_tokens=96, stride_tokens=48, progress=False).loss == reference.loss
    assert loglikelihoods(model, tok, requests) == reference_lls


# ------------------------------------------------------------ finding 4: evaluation dtype as lm-eval's auto


def test_evaluation_loads_the_checkpoints_own_dtype_as_lm_eval_auto_does(tiny, tmp_path):
    source = tiny(method="full").source
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16).save_pretrained(tmp_path / "bf16")
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp_path / "bf16")
    model, _ = load_for_eval(str(tmp_path / "bf16"))
    assert next(model.parameters()).dtype == torch.bfloat16
    from lm_eval.models.huggingface import HFLM

    harness = HFLM(pretrained=str(tmp_path / "bf16"), dtype="auto", device="cpu", batch_size=1)
    assert next(harness.model.parameters()).dtype == torch.bfloat16
    assert next(load_for_eval("tiny-llama")[0].parameters()).dtype == torch.float32  # an fp32 checkpoint
    assert next(load_for_eval(str(tmp_path / "bf16"), dtype="fp32")[0].parameters()).dtype == torch.float32


# ------------------------------------------------------------ finding 5: one device per process


class TwoGpus(trl.SFTConfig):
    """SFTConfig as transformers builds it in one process that sees two GPUs (training_args.py 1917)."""

    def __post_init__(self):
        super().__post_init__()
        _ = self.device  # sets up the devices, as Trainer does
        self._n_gpu = 2


def test_one_process_that_counts_two_gpus_trains_on_one(tiny, blocks, tmp_path, monkeypatch):
    monkeypatch.setattr(trl, "SFTConfig", TwoGpus)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    loaded = tiny(method="lora")
    result = train(loaded, blocks, TrainConfig(output_dir=str(tmp_path), max_steps=2, per_device_batch_size=2))
    assert result.steps == 2


def test_a_launched_process_keeps_what_the_launcher_set(monkeypatch):
    from cptnb.train.trainer import one_device_per_process

    args = types.SimpleNamespace(_n_gpu=2, n_gpu=2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert one_device_per_process(args) is False and args._n_gpu == 2
    monkeypatch.delenv("WORLD_SIZE")
    assert one_device_per_process(args) is True and args._n_gpu == 1


# ------------------------------------------------------------ finding 7a: block length against the model limit


def test_blocks_longer_than_the_models_limit_are_refused_before_training(tiny, blocks, tmp_path):
    loaded = tiny(method="lora", max_seq_len_tokens=32)
    with pytest.raises(ConfigError) as err:
        train(loaded, blocks, TrainConfig(output_dir=str(tmp_path), max_steps=2, per_device_batch_size=2))
    message = str(err.value)
    assert "data.block_tokens" in message and "model.max_seq_len_tokens" in message
    assert "64" in message and "32" in message
    assert not (tmp_path / "adapter").exists()


# ------------------------------------------------------------ finding 7b: only download errors are download errors


def _fake_unsloth(monkeypatch, error: Exception):
    class FastLanguageModel:
        @staticmethod
        def from_pretrained(**kwargs):
            raise error

    monkeypatch.setitem(sys.modules, "unsloth", types.SimpleNamespace(FastLanguageModel=FastLanguageModel))
    # Unsloth is asked at all only when the Hub answers or the model is cached (else the kit stops first).
    monkeypatch.setattr(loading, "unreachable_and_not_cached", lambda source: False)


def test_out_of_memory_while_loading_through_unsloth_is_not_called_a_download_problem(monkeypatch):
    _fake_unsloth(monkeypatch, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    with pytest.raises(torch.OutOfMemoryError):
        loading._load_unsloth(ModelConfig(name="org/model"), "org/model", torch.bfloat16)


def test_unsloth_failing_to_find_a_model_offline_is_a_download_problem(monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        try:
            raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache")
        except LocalEntryNotFoundError as cause:
            # What unsloth/models/loader.py 1661 raises when AutoConfig and PeftConfig both fail.
            message = "Unsloth: Failed to load model. Both AutoConfig and PeftConfig loading failed."
            raise RuntimeError(message) from cause
    except RuntimeError as chained:
        error = chained
    _fake_unsloth(monkeypatch, error)
    with pytest.raises(ModelNotAvailableError, match="hf download org/model"):
        loading._load_unsloth(ModelConfig(name="org/model"), "org/model", torch.bfloat16)


def test_a_model_that_transformers_cannot_build_is_not_called_a_download_problem(monkeypatch):
    from transformers import AutoModelForCausalLM

    def unsupported(*args, **kwargs):
        raise ValueError("The checkpoint you are trying to load has model type `newarch` that is not recognised")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", unsupported)
    with pytest.raises(ValueError, match="newarch"):
        loading.from_pretrained_or_explain(AutoModelForCausalLM, "org/model")


# ------------------------------------------------------------ findings 6 and 7c: Unsloth's CPU fallback


UNSLOTH_LOADS = textwrap.dedent(
    """
    import json, os, sys, warnings
    warnings.simplefilter("always")
    from cptnb.config import ModelConfig
    from cptnb.models.loading import load_model
    import unsloth
    seen = {}
    get_peft_model = unsloth.FastLanguageModel.get_peft_model

    def spy(model, **kwargs):  # the flag as Unsloth's GPU get_peft_model reads it (unsloth/models/llama.py 4641)
        seen["flag_at_get_peft_model"] = os.environ.get("UNSLOTH_ENABLE_FULL_FINETUNING")
        seen["ensure_weight_tying"] = kwargs.get("ensure_weight_tying")
        return get_peft_model(model, **kwargs)

    unsloth.FastLanguageModel.get_peft_model = staticmethod(spy)
    full = load_model(ModelConfig(name="tiny-llama", method="full", backend="unsloth"))
    seen["full_backend"] = full.backend
    seen["flag_after_full"] = os.environ.get("UNSLOTH_ENABLE_FULL_FINETUNING")
    # What a full load leaves set on a GPU (unsloth/models/vision.py 4025).
    os.environ["UNSLOTH_ENABLE_FULL_FINETUNING"] = "1"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lora = load_model(ModelConfig(name="tiny-llama", method="lora", train_embeddings=True, backend="unsloth"))
    model = lora.model
    seen["lora_weights"] = sum("lora_" in n for n in lora.trainable_names)
    seen["tied"] = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    seen["tying_warnings"] = [str(w.message)[:120] for w in caught if "ensure_weight_tying" in str(w.message)]
    print("RESULT " + json.dumps(seen))
    """
)


@pytest.fixture(scope="module")
def unsloth_cpu_loads(tiny, tmp_path_factory):
    pytest.importorskip("unsloth")
    tiny(method="full")  # the alias is built once, here, not in the child
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "UNSLOTH_DISABLE_STATISTICS": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", UNSLOTH_LOADS], env=env, capture_output=True, text=True, timeout=600,
                         cwd=tmp_path_factory.mktemp("unsloth"))
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert out.returncode == 0 and lines, (out.stdout[-2000:], out.stderr[-4000:])
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow
def test_a_lora_load_after_a_full_load_gets_its_adapters_through_unsloth(unsloth_cpu_loads):
    seen = unsloth_cpu_loads
    assert seen["full_backend"] == "unsloth"
    assert seen["flag_after_full"] == "1"
    # The flag a full load left set must read "0" when the LoRA load asks Unsloth for adapters.
    assert seen["flag_at_get_peft_model"] == "0"
    assert seen["lora_weights"] > 0


@pytest.mark.slow
def test_tied_embeddings_stay_tied_through_unsloth(unsloth_cpu_loads):
    seen = unsloth_cpu_loads
    assert seen["ensure_weight_tying"] is True
    assert seen["tied"] is True
    assert seen["tying_warnings"] == []
