"""Messages for the walls a learner hits: out of memory, no GPU, a resume that finds nothing after a Colab reset."""

from __future__ import annotations

import logging

import pytest
import torch

from cptnb.config import EvalConfig, TrainConfig
from cptnb.data import pack_documents
from cptnb.errors import CptnbError, OutOfMemoryError
from cptnb.guidance import (
    check_precision,
    evaluation_oom_advice,
    explain_out_of_memory,
    is_out_of_memory,
    training_oom_advice,
)
from cptnb.train.checkpoints import resolve_checkpoint
from cptnb.train.trainer import train


def test_a_real_failed_cpu_allocation_and_a_cuda_oom_are_recognised_and_nothing_else():
    with pytest.raises(RuntimeError) as failed:
        torch.empty(2**50, dtype=torch.uint8)  # 1 PiB: the allocator refuses at once
    assert is_out_of_memory(failed.value)
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("can't allocate memory"))  # only the allocator's RuntimeError


def test_out_of_memory_becomes_numbered_advice_and_other_errors_pass_through():
    with pytest.raises(OutOfMemoryError) as err:
        with explain_out_of_memory("evaluation", lambda: ["first fix", "second fix"]):
            torch.empty(2**50, dtype=torch.uint8)
    message = str(err.value)
    assert message.startswith("out of memory during evaluation on CPU memory (")
    assert "DefaultCPUAllocator: can't allocate memory" in message  # the original cause, shortened
    assert "  1. first fix\n  2. second fix" in message and "restart the kernel" in message
    with pytest.raises(KeyError):
        with explain_out_of_memory("training", lambda: pytest.fail("advice is built only for memory errors")):
            raise KeyError("x")


def test_training_advice_names_each_setting_with_its_new_value(tmp_path):
    cfg = TrainConfig(per_device_batch_size=8, gradient_accumulation_steps=2)
    advice = "\n".join(training_oom_advice(cfg, "full", 1024, tmp_path / "checkpoint-40"))
    assert "train.gradient_checkpointing: true" in advice
    assert "train.per_device_batch_size: 4 and train.gradient_accumulation_steps: 4" in advice  # same global batch
    assert "model.method: lora" in advice and "model.max_seq_len_tokens: 512" in advice
    assert f"continue from {tmp_path / 'checkpoint-40'} with resume=True" in advice
    odd = training_oom_advice(TrainConfig(per_device_batch_size=3, gradient_accumulation_steps=2), "lora", 256, None)
    assert "train.per_device_batch_size: 1 and train.gradient_accumulation_steps: 6" in "\n".join(odd)
    lean = training_oom_advice(TrainConfig(per_device_batch_size=1, gradient_checkpointing=True), "lora", 64, None)
    assert not any("gradient_checkpointing" in a or "per_device_batch_size" in a or "resume" in a for a in lean)
    assert any("max_seq_len_tokens: 64" in a for a in lean)  # never below 64 tokens


def test_evaluation_advice_halves_the_batch_and_keeps_stride_within_window():
    advice = evaluation_oom_advice(EvalConfig(batch_size=8, window_tokens=1024))
    assert advice[0].startswith("eval.batch_size: 4")
    assert "eval.window_tokens: 512 and eval.stride_tokens: 256" in advice[1]
    assert EvalConfig(window_tokens=512, stride_tokens=256).problems() == []  # the advice itself validates


def test_training_out_of_memory_is_explained_with_the_last_checkpoint(tiny, vi_docs, tmp_path, monkeypatch):
    loaded = tiny(method="lora")
    blocks = pack_documents(vi_docs[:20], loaded.tokenizer, 64).dataset
    cfg = TrainConfig(output_dir=str(tmp_path), max_steps=4, per_device_batch_size=2, save_steps=2, learning_rate=1e-3)
    from transformers import Trainer

    real_step = Trainer.training_step

    def step_that_runs_out(self, *args, **kwargs):
        if self.state.global_step >= 3:  # after checkpoint-2 was saved, as a longer sequence might
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", step_that_runs_out)
    with pytest.raises(OutOfMemoryError) as err:
        train(loaded, blocks, cfg)
    message = str(err.value)
    assert "out of memory during training (lora, micro-batches of 2 x 64 tokens)" in message
    assert "train.per_device_batch_size: 1 and train.gradient_accumulation_steps: 2" in message
    assert f"continue from {tmp_path / 'checkpoint-2'} with resume=True" in message


def test_a_resume_that_finds_nothing_says_why_on_colab(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab")
    with caplog.at_level(logging.WARNING, logger="cptnb"):
        assert resolve_checkpoint(str(tmp_path / "gone"), "auto") is None
    assert "no complete checkpoint" in caplog.text and "starts from step 0" in caplog.text
    assert "drive.mount('/content/drive')" in caplog.text
    monkeypatch.delenv("COLAB_RELEASE_TAG")
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cptnb"):
        resolve_checkpoint(str(tmp_path), True)
    assert "/kaggle/working" in caplog.text and "drive" not in caplog.text


def test_precisions_this_machine_cannot_train_in_are_refused_with_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CptnbError, match="fp16 mixed precision needs a CUDA GPU.*Change runtime type > T4 GPU"):
        check_precision("fp16")
    check_precision("bf16")  # CPUs train in bf16 (slowly); transformers allows it with use_cpu
    check_precision("fp32")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "Tesla T4")
    with pytest.raises(CptnbError, match="bf16 needs an Ampere or newer GPU .* this Tesla T4 has none"):
        check_precision("bf16")
    check_precision("fp16")


def test_a_hosted_notebook_without_a_gpu_is_told_how_to_get_one(tiny, monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    with caplog.at_level(logging.WARNING, logger="cptnb"):
        tiny(method="lora")
    assert "no GPU is visible" in caplog.text and "Settings > Accelerator > GPU" in caplog.text
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cptnb"):
        tiny(method="lora")
    assert "no GPU" not in caplog.text  # a laptop's CPU run is expected: no nagging
