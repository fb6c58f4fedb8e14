"""train.report_to: which trackers, the events they get, a clear error when one is not installed, offline defaults.

The TensorBoard read-back of a real run is in test_train_eval.py (it shares that module's training run).
"""

from __future__ import annotations

import importlib.util

import pytest

from cptnb.config import TrainConfig
from cptnb.errors import ConfigError
from cptnb.train import trackers


def test_a_chosen_tracker_that_is_not_installed_is_named_with_its_pip_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    with pytest.raises(ConfigError) as err:
        trackers.check_installed(["tensorboard", "wandb"])
    assert "report_to: wandb is not installed" in str(err.value) and "pip install wandb" in str(err.value)
    assert len(err.value.problems) == 1  # tensorboard is there
    trackers.check_installed(["tensorboard"])  # installed with the kit (requirements)


def test_report_to_accepts_the_four_trackers_and_a_single_name():
    assert TrainConfig(report_to="tensorboard").report_to == ["tensorboard"]
    assert TrainConfig(report_to="none").report_to == []
    assert TrainConfig(report_to=["tensorboard", "trackio", "wandb", "mlflow"]).report_to[-1] == "mlflow"
    with pytest.raises(ConfigError, match="unknown tracker 'comet'"):
        TrainConfig(report_to=["comet"])


def test_events_become_integration_logs_under_train_and_eval():
    event = {"step": 4, "train_loss": 2.5, "learning_rate": 1e-3, "heldout_general_loss": 3.1,
             "task_general_en_acc": 0.5, "general_task_acc": 0.5, "general_bpb_rise": 0.01, "retention": "ok",
             "retention_general_loss_limit": 3.2, "generations": [{"prompt": "Hà Nội là", "output": "thủ đô"}]}
    logs = trackers.tracker_logs(event)
    assert logs == {"loss": 2.5, "learning_rate": 1e-3, "eval_heldout_general_loss": 3.1,
                    "eval_task_general_en_acc": 0.5, "eval_general_task_acc": 0.5, "eval_general_bpb_rise": 0.01,
                    "eval_retention_general_loss_limit": 3.2}
    assert trackers.tracker_logs(event, text=True)["eval_generation_0"] == "Hà Nội là → thủ đô"


def test_offline_defaults_keep_runs_local_and_never_override_the_user(monkeypatch, tmp_path):
    for name in ("WANDB_MODE", "WANDB_DIR", "WANDB_API_KEY", "MLFLOW_TRACKING_URI", "TRACKIO_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # no `wandb login` on this machine
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")  # the user's own server wins
    applied = trackers.offline_defaults(["wandb", "mlflow", "trackio"], tmp_path / "run")
    assert applied["WANDB_MODE"] == "offline" and applied["WANDB_DIR"] == str((tmp_path / "run").resolve())
    assert applied["TRACKIO_DIR"] == str((tmp_path / "run" / "trackio").resolve())
    assert "MLFLOW_TRACKING_URI" not in applied
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE")
    assert "WANDB_MODE" not in trackers.offline_defaults(["wandb"], tmp_path / "run")  # logged in: online
