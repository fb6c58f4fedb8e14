"""`cptnb sweep`: replay runs and the no-replay run interpolated toward the base, from a recipe (tiny-llama)."""

import json

import pytest

from cptnb.cli import main
from cptnb.config import Recipe
from cptnb.errors import ConfigError
from cptnb.train.sweep import SweepConfig


def test_sweep_config_reads_command_line_lists_and_names_mistakes():
    cfg = SweepConfig(replay_shares=["0", "0.1"], alphas=["0.5"])
    assert cfg.replay_shares == [0.0, 0.1] and cfg.alphas == [0.5]
    with pytest.raises(ConfigError) as err:
        SweepConfig(replay_shares=[0.1, 0.2], alphas=[1.0], max_general_regression=-1)
    message = str(err.value)
    for needle in ("must include 0", "strictly between 0 (base) and 1", "max_general_regression must be"):
        assert needle in message, needle


@pytest.mark.slow  # two short tiny-llama runs and five held-out measurements
def test_cptnb_sweep_runs_the_frontier_from_a_recipe(tmp_path, capsys):
    recipe = Recipe.from_sample("smollm2_vi_forgetting_cpu").replace(
        model={"name": "tiny-llama", "max_seq_len_tokens": 64},
        train={"max_steps": 3, "learning_rate": 5e-3, "output_dir": str(tmp_path / "run")},
    )
    recipe.to_yaml(tmp_path / "recipe.yaml")
    out = tmp_path / "sweep"
    code = main(["sweep", "--config", str(tmp_path / "recipe.yaml"), "--replay_shares", "0", "0.2", "--alphas", "0.5",
                 "--heldout_domain_docs", "2", "--heldout_general_docs", "4", "--n_boot", "200",
                 "--out_dir", str(out), "--train.per_device_batch_size", "2"])
    assert code == 0
    payload = json.loads((out / "frontier.json").read_text())
    points = {p["name"]: p for p in payload["points"]}
    assert list(points) == ["replay 0%", "replay 0% · alpha 0.5", "replay 20%"]
    assert payload["complete"] and payload["recipe"]["train"]["per_device_batch_size"] == 2
    for p in points.values():
        assert p["general_ci"][0] <= p["general_change"] <= p["general_ci"][1]
    assert points["replay 0%"]["domain_gain"] > 0  # training on Vietnamese made held-out Vietnamese cheaper
    # Halfway back toward the base gives up part of the gain: the interpolation really moved the weights.
    assert 0 < points["replay 0% · alpha 0.5"]["domain_gain"] < points["replay 0%"]["domain_gain"]
    assert points["replay 0% · alpha 0.5"]["train_seconds"] == 0
    for share in (0, 20):  # each run folder is a cptnb train run folder: cptnb export reads it
        run = out / f"replay{share}"
        assert (run / "recipe.yaml").is_file() and (run / "adapter" / "adapter_config.json").is_file()  # LoRA recipe
        assert (run / "data" / "report.json").is_file() and (run / "metrics.jsonl").is_file()
    report = json.loads((out / "replay20" / "data" / "report.json").read_text())
    assert abs(report["tokens"]["replay_share_achieved"] - 0.2) < 0.03
    assert (out / "frontier.png").is_file() and payload["verdict"][-1] in capsys.readouterr().out
