"""Multi-process training with launch(): torchrun workers on CPU (gloo) and the per-strategy arguments."""

import importlib.util
import shutil

import pytest

from cptnb.config import Recipe, TrainConfig
from cptnb.errors import CptnbError
from cptnb.models.loading import resolve_source
from cptnb.paths import data_samples_dir
from cptnb.train.launch import LaunchError, _failure, launch, strategy_arguments

# Two processes x 2 blocks and one process x 4 blocks see the same 4 blocks in each step (the
# sampler's permutation is seeded, and accelerate deals consecutive batches to the ranks), so the
# curves differ only by float32 rounding: DDP averages two half-batch gradients, one process takes
# the mean over the whole batch. Measured: at most 4.8e-7 over 6 steps; 1e-5 leaves a 20x margin
# while a change in data order or batch size moves the loss by ~1e-3 or more.
LOSS_TOLERANCE = 1e-5


def _recipe() -> Recipe:
    recipe = Recipe.from_yaml(data_samples_dir() / "recipes" / "tiny_cpu_2proc.yaml")
    news = str(data_samples_dir() / "vi" / "news.jsonl")  # absolute: workers may start elsewhere
    recipe = recipe.replace(data={"sources": [news]})
    resolve_source(recipe.model)  # build the tiny model once, before two workers want it
    return recipe


def _tokens_per_step(history) -> list[float]:
    """Tokens the logger counted per optimizer step: tokens/s x seconds/step (eta = seconds x steps left)."""
    max_steps = max(e["step"] for e in history)
    logged = [e for e in history if "train_loss" in e and e["step"] < max_steps]
    return [e["tokens_per_second"] * e["eta_seconds"] / (max_steps - e["step"]) for e in logged]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """The tiny recipe trained by two CPU processes (2 blocks each per step)."""
    out = tmp_path_factory.mktemp("launch") / "two"
    return launch(_recipe(), num_processes=2, output_dir=out, echo=False, threads_per_process=1)


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(two_processes, tmp_path):
    recipe, two = _recipe(), two_processes
    recipe = recipe.replace(train={"per_device_batch_size": recipe.train.per_device_batch_size * 2})
    one = launch(recipe, num_processes=1, output_dir=tmp_path / "one", echo=False, threads_per_process=1)

    steps = list(range(1, recipe.train.max_steps + 1))
    assert two.loss_steps == steps  # each step logged once: only the main process writes metrics.jsonl
    assert one.loss_steps == steps
    assert two.losses == pytest.approx(one.losses, abs=LOSS_TOLERANCE)
    assert max(two.losses) - min(two.losses) > 100 * LOSS_TOLERANCE  # the curve moves: a match is not trivial
    block = recipe.model.max_seq_len_tokens
    for run in (one, two):  # tokens/s counts the global batch, 4 blocks a step in both runs
        assert _tokens_per_step(run.history) == pytest.approx([4 * block] * (len(steps) - 1), rel=1e-6)
    checkpoint = two.output_dir / "checkpoint-6"
    assert sorted(p.name for p in checkpoint.glob("rng_state*")) == ["rng_state_0.pth", "rng_state_1.pth"]
    assert (two.final_dir / "adapter_model.safetensors").is_file()
    assert (two.output_dir / "loss.png").is_file()
    assert (two.output_dir / "recipe.yaml").is_file()
    assert recipe.data.language in (two.output_dir / "recipe.yaml").read_text()
    # The corpus was prepared once, by the main process; the other read it from disk.
    assert two.log_path.read_text().count(f"prepared {two.output_dir / 'data'}") == 1


@pytest.mark.slow
def test_two_processes_resume_from_a_checkpoint_and_continue_the_curve(two_processes, tmp_path):
    # Each process restores its own RNG file and the optimizer state (which needed a fix on CPU: see train/trainer.py).
    run = tmp_path / "run"
    shutil.copytree(two_processes.output_dir, run)
    shutil.rmtree(run / "checkpoint-6")  # as if the run had died between step 3 and step 6
    resumed = launch(_recipe(), num_processes=2, output_dir=run, resume=True, echo=False, threads_per_process=1)
    assert f"resuming from {run / 'checkpoint-3'} (step 3 of 6)" in resumed.log_path.read_text()
    assert resumed.loss_steps == two_processes.loss_steps  # steps 4-6 replaced, not appended
    assert resumed.losses == pytest.approx(two_processes.losses, abs=1e-4)


@pytest.mark.slow
def test_a_failing_worker_raises_with_the_end_of_the_log(tmp_path):
    recipe = _recipe().replace(data={"sources": [str(tmp_path / "missing_corpus.jsonl")]})
    with pytest.raises(LaunchError) as err:
        launch(recipe, num_processes=2, output_dir=tmp_path / "run", echo=False, threads_per_process=1)
    message = str(err.value)
    first = message.splitlines()[0]  # the worker's own message comes first, torchrun's summary after
    assert "cptnb: error:" in first and "missing_corpus.jsonl" in first
    assert "training with 2 process(es) failed (exit code" in message
    assert str(tmp_path / "run" / "launch.log") in message


def test_failure_message_leads_with_the_workers_own_error(tmp_path):
    log = tmp_path / "launch.log"
    log.write_text(
        "[rank1]: Traceback (most recent call last):\n[rank1]:   File \"x.py\", line 1\n"
        "[rank1]: ValueError: block size 0\n[rank0]: RuntimeError: Connection closed by peer\n"
        + "".join(f"torchrun summary {i}\n" for i in range(60))
    )
    message = str(_failure(log, 1, 2))
    assert message.splitlines()[0] == "[rank1]: ValueError: block size 0"
    assert "failed (exit code 1)" in message and str(log) in message
    assert "torchrun summary 59" in message and "torchrun summary 19" not in message  # only the tail is quoted
    log.write_text("[rank0]: ValueError: first\ncptnb: error: data/x.jsonl:3: not valid JSON\n")
    assert str(_failure(log, 1, 2)).startswith("cptnb: error: data/x.jsonl:3")  # a user error wins


def test_launch_rejects_a_bad_process_count(tmp_path):
    with pytest.raises(CptnbError, match="num_processes must be an integer >= 1, got 0"):
        launch(_recipe(), num_processes=0, output_dir=tmp_path)


def test_strategy_arguments_per_backend_and_world_size():
    assert strategy_arguments(TrainConfig(distributed_backend="fsdp"), "full", 1) == {}  # one process: plain
    assert strategy_arguments(TrainConfig(), "lora", 2) == {"ddp_find_unused_parameters": False}
    with pytest.raises(CptnbError, match="fsdp shards full weights, but model.method is lora"):
        strategy_arguments(TrainConfig(distributed_backend="fsdp"), "lora", 2)
    fsdp = strategy_arguments(TrainConfig(distributed_backend="fsdp", gradient_checkpointing=True), "full", 2)
    assert fsdp["fsdp"] is True
    assert fsdp["fsdp_config"]["activation_checkpointing"] is True
    assert fsdp["fsdp_config"]["state_dict_type"] == "FULL_STATE_DICT"


def test_fsdp_arguments_are_accepted_by_the_trainer_config(tmp_path):
    """FSDP itself cannot run on CPU gloo here; this checks that transformers parses what we pass."""
    from trl import SFTConfig

    extra = strategy_arguments(TrainConfig(distributed_backend="fsdp", gradient_checkpointing=True), "full", 2)
    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", **extra)
    plugin = args.fsdp_plugin_args
    assert plugin["fsdp_version"] == 2
    assert plugin["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert plugin["state_dict_type"] == "FULL_STATE_DICT"
    assert plugin["activation_checkpointing"] is True
    assert plugin["reshard_after_forward"] is True


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="DeepSpeed is installed")
def test_deepspeed_without_the_package_is_a_clear_error():
    with pytest.raises(CptnbError, match="deepspeed needs DeepSpeed: pip install deepspeed"):
        strategy_arguments(TrainConfig(distributed_backend="deepspeed", zero_stage=2), "full", 2)
