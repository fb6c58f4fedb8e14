"""`cptnb evaluate | compare | export-lm-eval-tasks` and loading a model + adapter for scoring (tiny-llama)."""

import json

import pytest
import torch

from cptnb.cli import main
from cptnb.config import ModelConfig
from cptnb.errors import ModelNotAvailableError
from cptnb.models.loading import load_for_eval, load_model


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    """A LoRA adapter on tiny-llama whose B matrices are non-zero, so it changes the logits."""
    loaded = load_model(ModelConfig(name="tiny-llama", method="lora", lora_rank=4))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in loaded.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    out = tmp_path_factory.mktemp("adapter")
    loaded.model.save_pretrained(out)
    loaded.tokenizer.save_pretrained(out)
    return out


def _logits(model, tokenizer, text="Hà Nội là thủ đô"):
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        return model(input_ids=ids).logits


def test_load_for_eval_applies_the_adapter(adapter_dir):
    base, tok = load_for_eval("tiny-llama")
    adapted, _ = load_for_eval("tiny-llama", adapter=adapter_dir)
    assert not adapted.training
    assert (_logits(base, tok) - _logits(adapted, tok)).abs().max() > 1e-3


def test_load_for_eval_names_a_folder_that_is_not_an_adapter(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="no adapter_config.json"):
        load_for_eval("tiny-llama", adapter=tmp_path)


def test_evaluate_then_compare_on_the_command_line(adapter_dir, tmp_path, capsys):
    common = ["--eval.limit", "2", "--task", "wikipediaqa_vi", "--task", "lambada_vi",
              "--heldout-domain", "data_samples/heldout/vi_heldout.jsonl", "--heldout-docs", "2"]
    assert main(["evaluate", "--model", "tiny-llama", "--out", str(tmp_path / "base"), *common]) == 0
    assert main(["evaluate", "--model", "tiny-llama", "--adapter", str(adapter_dir),
                 "--out", str(tmp_path / "adapted"), *common]) == 0
    base = json.loads((tmp_path / "base" / "results.json").read_text(encoding="utf-8"))
    adapted = json.loads((tmp_path / "adapted" / "results.json").read_text(encoding="utf-8"))
    assert set(base["tasks"]) == {"wikipediaqa_vi", "lambada_vi"}
    assert base["tasks"]["wikipediaqa_vi"]["n"] == 2 and base["meta"]["limit"] == 2
    assert adapted["meta"]["adapter"] == str(adapter_dir)
    assert base["heldout"]["domain"]["docs"] == 2
    # The adapter changes the model, so the per-item log-likelihoods differ.
    assert base["tasks"]["lambada_vi"]["items"][0]["loglikelihood"] != adapted["tasks"]["lambada_vi"]["items"][0]["loglikelihood"]

    assert main(["compare", str(tmp_path / "base"), str(tmp_path / "adapted" / "results.json"),
                 "--out", str(tmp_path / "cmp"), "--n-boot", "200"]) == 0
    table = (tmp_path / "cmp" / "comparison.md").read_text(encoding="utf-8")
    assert "wikipediaqa_vi" in table and "lambada_vi" in table
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 1000
    assert "Domain change" in capsys.readouterr().out


def test_evaluate_rejects_an_unknown_task(tmp_path, capsys):
    assert main(["evaluate", "--model", "tiny-llama", "--out", str(tmp_path), "--task", "no_such_task"]) == 2
    assert "unknown task 'no_such_task'" in capsys.readouterr().err


def test_export_lm_eval_tasks_writes_one_yaml_per_task(tmp_path):
    assert main(["export-lm-eval-tasks", str(tmp_path)]) == 0
    names = {p.stem for p in tmp_path.glob("*.yaml")}
    assert {"lambada_vi", "wikipediaqa_vi", "comprehension_vi", "general_en"} <= names
