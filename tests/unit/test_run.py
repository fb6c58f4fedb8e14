import json

import pytest

from cptnb.cli import main
from cptnb.config import Recipe
from cptnb.paths import data_samples_dir


@pytest.mark.slow  # prepare + train + checkpoints through the CLI: ~110 CPU-s
def test_train_command_runs_a_recipe_end_to_end(tmp_path):
    recipe = Recipe.from_yaml(data_samples_dir() / "recipes" / "smollm2_vi_lora_cpu.yaml").replace(
        model={"name": "tiny-llama", "max_seq_len_tokens": 64},
        train={"max_steps": 4, "eval_steps": 2, "save_steps": 2, "output_dir": str(tmp_path / "run")},
    )
    recipe.to_yaml(tmp_path / "recipe.yaml")

    assert main(["train", "--config", str(tmp_path / "recipe.yaml")]) == 0

    out = tmp_path / "run"
    for name in ("recipe.yaml", "metrics.jsonl", "loss.png", "data/report.json", "adapter/adapter_config.json"):
        assert (out / name).is_file(), name
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if "train_loss" in e] == [1, 2, 3, 4]
    for name in ("domain", "general"):  # each held-out set is evaluated and logged at the base (0), 2 and 4
        assert [e["step"] for e in events if f"heldout_{name}_loss" in e] == [0, 2, 4]
    # The tasks scored during training (train.task_eval_limit items each) at the same steps, and the run's report.
    assert [e["step"] for e in events if "general_task_acc" in e] == [0, 2, 4]
    assert "## Evaluations during training" in (out / "train_report.md").read_text(encoding="utf-8")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    report = json.loads((out / "data" / "report.json").read_text())
    assert 0.05 < report["tokens"]["replay_share_achieved"] < 0.15


def test_train_command_reports_a_bad_recipe_without_traceback(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("model:\n  method: lorra\ntrain:\n  learning_rate: 0\n")
    assert main(["train", "--config", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert "model.method must be one of lora, qlora, full" in err and "train.learning_rate must be > 0" in err
    assert "Traceback" not in err


def test_heldout_eval_sets_pack_an_even_sample_of_each_set_and_leave_out_empty_ones():
    from types import SimpleNamespace

    from cptnb.config import ModelConfig
    from cptnb.models.loading import load_tokenizer
    from cptnb.train.run import heldout_eval_sets

    tokenizer = load_tokenizer(ModelConfig(name="tiny-llama"))
    texts = [f"Tài liệu số {i}: " + "Hà Nội là thủ đô của Việt Nam. " * (i + 4) for i in range(6)]
    corpus = SimpleNamespace(heldout_domain=texts, heldout_general=[])
    every = heldout_eval_sets(corpus, tokenizer, 16)
    sample = heldout_eval_sets(corpus, tokenizer, 16, max_docs=2)  # documents 0 and 3
    assert set(every) == {"domain"}  # no general text: no set, rather than an empty one
    assert all(len(row["input_ids"]) == 16 for row in every["domain"])
    two = sum(len(tokenizer(texts[i], add_special_tokens=False)["input_ids"]) + 1 for i in (0, 3))  # + one eos each
    assert len(sample["domain"]) == two // 16 < len(every["domain"])
