"""Kill-and-resume: a run killed with SIGKILL and started again with --resume continues the same curve."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from cptnb.config import Recipe, TrainConfig
from cptnb.errors import CptnbError
from cptnb.models.loading import resolve_source
from cptnb.paths import data_samples_dir
from cptnb.train.checkpoints import check_resumable, last_complete_checkpoint, resolve_checkpoint
from cptnb.train.run import trim_metrics

MAX_STEPS, SAVE_STEPS = 10, 4
# The bar: on CPU with the tiny model the resumed losses equal the uninterrupted run's within 1e-4.
LOSS_TOLERANCE = 1e-4


def _recipe(tmp_path, method: str):
    samples = data_samples_dir()
    recipe = Recipe.from_dict(
        {
            "data": {
                "sources": [str(samples / "vi" / "news.jsonl")],
                "heldout_share": 0.0,
                "heldout_domain": [str(samples / "heldout" / "vi_heldout.jsonl")],
                "heldout_general": [],
                "langid": {"enabled": False},  # loading the language-id model costs seconds per process
                "dedup": {"near": False},
            },
            # Dropout on the LoRA input makes the curve depend on the restored RNG state.
            "model": {"name": "tiny-llama", "method": method, "max_seq_len_tokens": 32, "lora_rank": 4,
                      "lora_dropout": 0.1},
            "train": {
                "max_steps": MAX_STEPS,
                "per_device_batch_size": 2,
                "gradient_accumulation_steps": 2,  # the resumed run must also skip the right micro-batches
                "learning_rate": 5e-3 if method == "lora" else 1e-3,
                "warmup_steps": 2,
                "save_steps": SAVE_STEPS,
                "save_total_limit": 2,
                "eval_steps": 5,
                "logging_steps": 1,
            },
        }
    )
    path = tmp_path / "recipe.yaml"
    recipe.to_yaml(path)
    resolve_source(recipe.model)  # build the tiny model once, before two processes want it at the same time
    return path


def _train(config, out, log, *extra, hash_seed: str = "0"):
    """Start ``cptnb train`` in a subprocess; its output goes to ``log`` (a pipe could fill up and stall it)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "PYTHONHASHSEED": hash_seed}
    cmd = [sys.executable, "-m", "cptnb.cli", "train", "--config", str(config), "--output-dir", str(out), *extra]
    with open(log, "w") as fh:
        return subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)


def _tail(log) -> str:
    return log.read_text(errors="replace")[-2000:]


def _events(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _logged_steps(out) -> list[int]:
    try:
        return [e["step"] for e in _events(out) if "train_loss" in e]
    except (OSError, json.JSONDecodeError):  # not created yet, or a line half written
        return []


def _kill_after(proc, out, log, step: int, timeout_s: float = 240) -> list[int]:
    """SIGKILL ``proc`` as soon as its metrics show ``step``: checkpoint-(step-1) is then complete."""
    deadline = time.monotonic() + timeout_s
    while max(_logged_steps(out), default=0) < step:
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before step {step}: {_tail(log)}")
        assert time.monotonic() < deadline, f"no step {step} after {timeout_s} s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return _logged_steps(out)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "full"])
def test_sigkilled_run_resumes_from_its_checkpoint_and_reproduces_the_curve(tmp_path, method):
    config = _recipe(tmp_path, method)
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    logs = {name: tmp_path / f"{name}.log" for name in ("reference", "killed", "resumed")}
    reference = _train(config, reference_dir, logs["reference"])  # both at once: one thread each, two cores
    killed = _train(config, killed_dir, logs["killed"])
    seen = _kill_after(killed, killed_dir, logs["killed"], SAVE_STEPS + 1)
    assert reference.wait() == 0, _tail(logs["reference"])
    assert max(seen) > SAVE_STEPS  # the killed run logged steps past its checkpoint, which the resume replays
    checkpoint = last_complete_checkpoint(killed_dir)
    resume_step = int(checkpoint.name.split("-")[1])
    assert resume_step in (SAVE_STEPS, 2 * SAVE_STEPS)  # the second only if the kill came late

    resumed = _train(config, killed_dir, logs["resumed"], "--resume")
    assert resumed.wait() == 0, _tail(logs["resumed"])
    assert f"resuming from {checkpoint} (step {resume_step} of {MAX_STEPS})" in logs["resumed"].read_text()

    ref_events, res_events = _events(reference_dir), _events(killed_dir)
    ref_loss = {e["step"]: e["train_loss"] for e in ref_events if "train_loss" in e}
    res_steps = [e["step"] for e in res_events if "train_loss" in e]
    assert res_steps == list(range(1, MAX_STEPS + 1))  # each step once: the replayed steps were trimmed, not doubled
    res_loss = {e["step"]: e["train_loss"] for e in res_events if "train_loss" in e}
    later = [s for s in res_steps if s > resume_step]
    assert later, "nothing was trained after the resume"
    for step in later:
        assert res_loss[step] == pytest.approx(ref_loss[step], abs=LOSS_TOLERANCE), f"step {step}"
    assert len({round(ref_loss[s], 4) for s in later}) > 1  # the curve moves, so equality is not trivial
    ref_eval = [(e["step"], e["heldout_domain_loss"]) for e in ref_events if "heldout_domain_loss" in e]
    res_eval = [(e["step"], e["heldout_domain_loss"]) for e in res_events if "heldout_domain_loss" in e]
    assert [s for s, _ in res_eval] == [0, 5, 10]  # 0: the base, measured by the first session (cptnb.train.watch)
    assert [v for _, v in res_eval] == pytest.approx([v for _, v in ref_eval], abs=LOSS_TOLERANCE)

    weights = "adapter/adapter_model.safetensors" if method == "lora" else "model/model.safetensors"
    ref_weights, res_weights = load_file(reference_dir / weights), load_file(killed_dir / weights)
    assert ref_weights.keys() == res_weights.keys()
    for name, tensor in ref_weights.items():
        assert torch.allclose(tensor, res_weights[name], atol=1e-5), name


@pytest.mark.slow
def test_a_resume_in_a_new_process_prepares_the_same_corpus_with_the_default_pipeline(tmp_path):
    """Held-out split, language id and near-dedup all on: the resumed process must rebuild the very same blocks."""
    samples = data_samples_dir()
    news = [json.loads(line) for line in (samples / "vi" / "news.jsonl").read_text(encoding="utf-8").splitlines()]
    english = [json.loads(line) for line in (samples / "en" / "general.jsonl").read_text(encoding="utf-8").splitlines()]
    # Work for every stage: near and exact duplicates for dedup, English documents for language id to drop.
    extra = [{"id": f"near-{i}", "text": d["text"] + " Tin được cập nhật lúc chiều."} for i, d in enumerate(news[:3])]
    extra += [{"id": "exact-0", "text": news[3]["text"]}]
    extra += [{"id": f"en-{i}", "text": d["text"]} for i, d in enumerate(english[:2])]
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "more.jsonl").write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in extra),
                                                    encoding="utf-8")
    recipe = Recipe.from_dict(
        {
            "data": {  # only paths set: every cleaning, filtering and dedup stage runs with its defaults
                "sources": [str(samples / "vi"), str(tmp_path / "corpus")],
                "heldout_domain": [str(samples / "heldout" / "vi_heldout.jsonl")],
                "heldout_general": [str(samples / "heldout" / "en_heldout.jsonl")],
            },
            "model": {"name": "tiny-llama", "method": "lora", "max_seq_len_tokens": 32, "lora_rank": 4,
                      "lora_dropout": 0.1},
            "train": {"max_steps": 4, "per_device_batch_size": 2, "learning_rate": 5e-3, "warmup_steps": 1,
                      "save_steps": 2, "save_total_limit": 2, "eval_steps": 2, "logging_steps": 1},
        }
    )
    assert recipe.data.heldout_share > 0 and recipe.data.langid.enabled and recipe.data.dedup.near
    config = tmp_path / "recipe.yaml"
    recipe.to_yaml(config)
    resolve_source(recipe.model)
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    logs = {name: tmp_path / f"{name}.log" for name in ("reference", "resumed")}
    assert _train(config, reference, logs["reference"], hash_seed="1").wait() == 0, _tail(logs["reference"])
    shutil.copytree(reference, resumed)
    for name in ("checkpoint-4", "adapter", "data"):  # as if killed after checkpoint-2; data/ is prepared again
        shutil.rmtree(resumed / name)
    assert _train(config, resumed, logs["resumed"], "--resume", hash_seed="2").wait() == 0, _tail(logs["resumed"])
    assert "(step 2 of 4)" in logs["resumed"].read_text()

    from datasets import load_from_disk

    blocks = [list(load_from_disk(str(out / "data" / "train"))["input_ids"]) for out in (reference, resumed)]
    assert len(blocks[0]) > 4 and blocks[0] == blocks[1]
    for name in ("heldout_domain.jsonl", "heldout_general.jsonl"):
        assert (reference / "data" / name).read_bytes() == (resumed / "data" / name).read_bytes(), name
    report = [json.loads((out / "data" / "report.json").read_text()) for out in (reference, resumed)]
    for part in ("total", "tokens", "heldout", "dedup"):
        assert report[0][part] == report[1][part], part
    # Each stage had decisions to make, so a decision that differed between the processes would show.
    assert report[0]["heldout"]["domain_docs"] > 0
    dedup = report[0]["dedup"]["domain"]
    assert dedup["near_duplicates"] >= 1 and dedup["exact_duplicates"] >= 1
    assert report[0]["total"]["dropped"].get("wrong_language", 0) >= 1
    ref, res = _events(reference), _events(resumed)
    for key in ("train_loss", "heldout_domain_loss", "heldout_general_loss"):
        ref_values = [(e["step"], e[key]) for e in ref if key in e]
        res_values = [(e["step"], e[key]) for e in res if key in e]
        assert [s for s, _ in res_values] == [s for s, _ in ref_values], key
        assert [v for _, v in res_values] == pytest.approx([v for _, v in ref_values], abs=LOSS_TOLERANCE), key


def _checkpoint(root, step, complete=True):
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def test_resume_skips_a_checkpoint_killed_while_saving(tmp_path):
    good = _checkpoint(tmp_path, 3)
    _checkpoint(tmp_path, 20)
    torn = _checkpoint(tmp_path, 30, complete=False)  # model saved, trainer state not yet written
    (tmp_path / "checkpoint-40").mkdir()
    (torn / "trainer_state.json").write_text('{"global_st')  # killed in the middle of the write
    _checkpoint(tmp_path, 100, complete=False)
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-20"  # numeric order: 20 after 3
    assert resolve_checkpoint(tmp_path, "auto") == tmp_path / "checkpoint-20"
    assert resolve_checkpoint(tmp_path, True) == tmp_path / "checkpoint-20"
    assert resolve_checkpoint(tmp_path, str(good)) == good
    assert resolve_checkpoint(tmp_path, False) is None
    assert resolve_checkpoint(tmp_path / "empty", "auto") is None
    with pytest.raises(CptnbError, match=r"checkpoint-30: it is not a complete checkpoint"):
        resolve_checkpoint(tmp_path, str(torn))


def test_trim_metrics_keeps_steps_up_to_the_checkpoint_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "train_loss": 5.0 - s / 10}) for s in range(1, 7)]
    lines.insert(3, json.dumps({"step": 3, "heldout_domain_loss": "nan"}))
    path.write_text("\n".join(lines) + '\n{"step": 7, "train_lo')
    kept = trim_metrics(path, 4)
    assert [(e["step"], sorted(e)) for e in kept] == [
        (1, ["step", "train_loss"]),
        (2, ["step", "train_loss"]),
        (3, ["step", "train_loss"]),
        (3, ["heldout_domain_loss", "step"]),
        (4, ["step", "train_loss"]),
    ]
    assert kept[3]["heldout_domain_loss"] != kept[3]["heldout_domain_loss"]  # "nan" read back as a float NaN
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 3, 4]
    assert trim_metrics(tmp_path / "absent.jsonl", 4) == []


def test_resuming_a_finished_run_is_an_error_not_an_extra_step(tmp_path):
    done = _checkpoint(tmp_path, 6)
    assert check_resumable(None, TrainConfig(max_steps=6)) == 0
    assert check_resumable(done, TrainConfig(max_steps=8)) == 6
    with pytest.raises(CptnbError, match=r"checkpoint-6 is at step 6 and train.max_steps is 6: that run is complete"):
        check_resumable(done, TrainConfig(max_steps=6))
