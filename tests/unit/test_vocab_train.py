"""Training new rows on tiny-llama: the embeddings-only stage, a whole recipe, export and reload of an extended model."""

from __future__ import annotations

import json

import pytest
import torch

from cptnb.config import ModelConfig, Recipe
from cptnb.paths import data_samples_dir
from cptnb.vocab import VocabError, extend_vocabulary
from cptnb.vocab.adapter import fit_base_to_adapter, read_record


def _vi_texts() -> list[str]:
    return [json.loads(line)["text"] for p in sorted((data_samples_dir() / "vi").glob("*.jsonl"))
            for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def extended_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("vocab")
    cfg = ModelConfig(name="tiny-llama", train_embeddings=True, vocab={"new_tokens": 100})
    result = extend_vocabulary(cfg, _vi_texts()[:120], out, heldout_texts=_vi_texts()[120:])
    return result


def _recipe(tmp_path, **vocab) -> Recipe:
    return Recipe.from_sample("smollm2_vi_lora_cpu").replace(
        model={"name": "tiny-llama", "max_seq_len_tokens": 64, "train_embeddings": True,
               "vocab": {"new_tokens": 100, **vocab}},
        train={"max_steps": 2, "eval_steps": 0, "save_steps": 0, "per_device_batch_size": 2,
               "output_dir": str(tmp_path / "run")},
        data={"replay_share": 0.0, "replay_sources": []},
    )


def test_extend_vocabulary_writes_a_loadable_model_and_a_report(extended_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = extended_dir.model_dir
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert len(tok) == 1124 and model.get_input_embeddings().weight.shape[0] == 1152
    assert model.config.cptnb_vocab["padding_ids"] == [1124, 1152]
    assert read_record(model_dir)["resize"]["method"] == "mean_of_pieces"
    report = json.loads((model_dir.parent / "report.json").read_text())
    held = report["corpora"]["heldout_domain"]
    assert held["after"]["tokens_per_word"] < held["before"]["tokens_per_word"]
    assert "tokens/word before" in (model_dir.parent / "report.md").read_text()


def test_embeddings_only_stage_moves_new_rows_only(tmp_path, extended_dir):
    from cptnb.data import Document, pack_documents
    from cptnb.models.loading import load_model
    from cptnb.vocab.stage import embedding_weight, train_embeddings_first

    recipe = _recipe(tmp_path)
    loaded = load_model(recipe.model.replace(name=str(extended_dir.model_dir)))
    packed = pack_documents([Document(t, "vi") for t in _vi_texts()[:30]], loaded.tokenizer, 64)
    before = embedding_weight(loaded.model).detach().clone()
    lora_before = {n: p.detach().clone() for n, p in loaded.model.named_parameters() if "lora_" in n}
    train_embeddings_first(loaded, packed.dataset, recipe, steps=2, rows="new")
    after = embedding_weight(loaded.model).detach()
    assert torch.equal(after[:1024], before[:1024])  # old rows untouched
    assert not torch.equal(after[1024:1124], before[1024:1124])  # new rows trained
    assert torch.equal(after[1124:], before[1124:])  # padding rows stay zero
    assert all(torch.equal(p, lora_before[n]) for n, p in loaded.model.named_parameters() if "lora_" in n)
    assert all(p.requires_grad for n, p in loaded.model.named_parameters() if "lora_" in n)  # unfrozen again
    assert (tmp_path / "run" / "embedding_stage" / "metrics.jsonl").is_file()


@pytest.mark.slow
def test_a_recipe_extends_trains_and_exports_with_equal_logits(tmp_path):
    from cptnb.export import export_run
    from cptnb.models.loading import load_for_eval
    from cptnb.train.run import run_recipe

    recipe = _recipe(tmp_path, embedding_stage_steps=2)
    result = run_recipe(recipe)
    out = tmp_path / "run"
    assert (out / "vocab" / "model" / "cptnb_vocab.json").is_file()
    assert (out / "embedding_stage" / "adapter" / "adapter_config.json").is_file()
    assert read_record(result.final_dir)["resize"]["rows_after"] == 1152
    assert Recipe.from_yaml(out / "recipe.yaml").model.name == "tiny-llama"  # the recipe as written
    report = json.loads((out / "data" / "report.json").read_text())
    assert report["fertility"]  # packed with the extended tokenizer

    exported = export_run(out, tmp_path / "export", dtype="fp32")
    assert exported.check.passed and exported.check.max_abs_diff <= 1e-5
    assert exported.check.saved_max_abs_diff == 0.0  # the resized, tied rows read back exactly as saved
    card = exported.card.read_text()
    assert "## Vocabulary extension" in card and "100 tokens added" in card

    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "export" / "merged")
    tok = AutoTokenizer.from_pretrained(tmp_path / "export" / "merged")
    assert len(tok) == 1124 and merged.get_input_embeddings().weight.shape[0] == 1152
    # the adapter on the original (unextended) base, as cptnb loads it for evaluation
    model, eval_tok = load_for_eval("tiny-llama", adapter=result.final_dir)
    ids = eval_tok("Hà Nội là thủ đô của Việt Nam.", return_tensors="pt")["input_ids"]
    assert max(ids[0].tolist()) >= 1024  # new ids are used
    with torch.no_grad():
        diff = (model(input_ids=ids).logits - merged(input_ids=ids).logits).abs().max()
    assert float(diff) <= 1e-5


def test_an_extended_adapter_on_the_wrong_base_is_explained(tmp_path, extended_dir):
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "cptnb_vocab.json").write_text((extended_dir.model_dir / "cptnb_vocab.json").read_text())
    config = AutoConfig.from_pretrained(extended_dir.model_dir)
    config.vocab_size = 2048
    with pytest.raises(VocabError, match="load it on the model it was trained from"):
        fit_base_to_adapter(AutoModelForCausalLM.from_config(config), folder)


def test_vocab_settings_are_checked_with_the_recipe():
    from cptnb.errors import ConfigError

    with pytest.raises(ConfigError, match="need train_embeddings: true"):
        Recipe().replace(model={"vocab": {"new_tokens": 10}, "train_embeddings": False})
    with pytest.raises(ConfigError, match="model.vocab.init must be one of"):
        Recipe().replace(model={"vocab": {"init": "zeros"}})
    with pytest.raises(ConfigError, match="embedding_stage_rows must be one of new, all"):
        Recipe().replace(model={"vocab": {"embedding_stage_rows": "old"}, "train_embeddings": True})


def test_extend_vocab_command_writes_the_extended_model_and_explains_a_missing_count(tmp_path, capsys):
    from cptnb.cli import main

    common = ["--model.name", "tiny-llama", "--model.train_embeddings", "true", "--data.heldout_share", "0.1",
              "--out", str(tmp_path / "vocab")]
    assert main(["extend-vocab", *common]) == 2
    assert "model.vocab.new_tokens is 0" in capsys.readouterr().err
    assert main(["extend-vocab", *common, "--model.vocab.new_tokens", "50"]) == 0
    assert "train on it with --model.name" in capsys.readouterr().out
    assert len(read_record(tmp_path / "vocab" / "model")["new_tokens"]) == 50
    assert (tmp_path / "vocab" / "report.md").is_file()


def test_a_run_reuses_its_extension_until_a_setting_or_the_corpus_changes(tmp_path):
    from cptnb.vocab.extend import extended_model_config

    recipe = _recipe(tmp_path)
    cfg = extended_model_config(recipe, tmp_path / "run")
    record = tmp_path / "run" / "vocab" / "model" / "cptnb_vocab.json"
    assert cfg.name == str(record.parent) and cfg.vocab == recipe.model.vocab
    first = record.stat().st_mtime_ns
    extended_model_config(recipe, tmp_path / "run")  # a resumed run: same settings, same folder
    assert record.stat().st_mtime_ns == first
    extended_model_config(recipe.replace(data={"min_chars": 40}), tmp_path / "run")
    assert record.stat().st_mtime_ns != first
    assert extended_model_config(recipe.replace(model={"vocab": {"new_tokens": 0}}), tmp_path).name == "tiny-llama"
