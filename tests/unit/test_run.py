import json

from cptnb.cli import main
from cptnb.config import Recipe
from cptnb.paths import data_samples_dir


def test_train_command_runs_a_recipe_end_to_end(tmp_path):
    recipe = Recipe.from_yaml(data_samples_dir() / "recipes" / "smollm2_vi_lora_cpu.yaml")
    recipe.model.name = "tiny-llama"
    recipe.model.max_seq_len_tokens = 64
    recipe.train.max_steps = 4
    recipe.train.eval_steps = 2
    recipe.train.save_steps = 2
    recipe.train.output_dir = str(tmp_path / "run")
    recipe.to_yaml(tmp_path / "recipe.yaml")

    assert main(["train", "--config", str(tmp_path / "recipe.yaml")]) == 0

    out = tmp_path / "run"
    for name in ("recipe.yaml", "metrics.jsonl", "loss.png", "data/report.json", "adapter/adapter_config.json"):
        assert (out / name).is_file(), name
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if "train_loss" in e] == [1, 2, 3, 4]
    for name in ("domain", "general"):  # each held-out set is evaluated and logged at steps 2 and 4
        assert [e["step"] for e in events if f"heldout_{name}_loss" in e] == [2, 4]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    report = json.loads((out / "data" / "report.json").read_text())
    assert 0.05 < report["tokens"]["replay_share_achieved"] < 0.15


def test_train_command_reports_a_bad_recipe_without_traceback(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("model:\n  method: lorra\ntrain:\n  learning_rate: 0\n")
    assert main(["train", "--config", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert "model.method must be one of lora, qlora, full" in err and "train.learning_rate must be > 0" in err
    assert "Traceback" not in err
