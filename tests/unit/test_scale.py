"""The corpus stage on datatrove's executors: the same decisions and report as in process, on every executor.

Also the pieces that make it scale: text files read in bounded blocks, .gz / .zst
streamed, large .jsonl files cut into byte ranges that read exactly like the whole file.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from cptnb.config import DataConfig
from cptnb.data import sources
from cptnb.data.documents import DropCounter
from cptnb.data.pipeline import CorpusStream, prepare
from cptnb.data.scale import ScaleConfig
from cptnb.data.scale.plan import byte_ranges, plan_units
from cptnb.data.sources import read_documents, read_range
from cptnb.errors import ConfigError, CptnbError
from cptnb.paths import data_samples_dir

ROOT = data_samples_dir()
REPO = Path(__file__).resolve().parents[2]
datatrove = pytest.importorskip("datatrove", reason="datatrove is the optional extra cptnb[scale]")


# --------------------------------------------------------------------------- reading in blocks and ranges


def _edge_files(tmp: Path) -> list[Path]:
    """Files whose reading depends on where a block is cut: CRLF, BOM, bad bytes, blank runs, a long line."""
    vi = [json.loads(line)["text"] for line in (ROOT / "vi" / "news.jsonl").read_text(encoding="utf-8").splitlines()]
    lines = [json.dumps({"text": t}, ensure_ascii=False).encode() for t in vi[:12]]
    jsonl = tmp / "edge.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + lines[0] + b"\r\n" + b"\r\n".join(lines[1:4]) + b"\n\n"
                      + lines[4][:40] + b"\xff\xfe" + lines[4][40:] + b"\n" + b'{"text": "broken\n'
                      + b"\n".join(lines[5:]) + b"\n" + json.dumps({"text": "x" * 5000}).encode())
    txt = tmp / "edge.txt"
    blocks = [t.encode() for t in vi[:10]]
    txt.write_bytes(b"\n\n\n".join(blocks[:3]) + b"\r\n\r\n" + b"\n\n".join(blocks[3:6]) + b"\n \n"
                    + blocks[6] + b"\xc3\n\n" + b"\n\n\n\n".join(blocks[7:]))
    return [jsonl, txt]


def _read(paths, **kw) -> tuple[list[tuple[str, str, str]], dict]:
    drops = DropCounter()
    docs = [(d.id, d.source, d.text) for d in read_documents(paths, on_error="skip", drops=drops, **kw)]
    return docs, dict(drops.docs)


def test_small_blocks_read_exactly_like_one_block(tmp_path, monkeypatch):
    files = _edge_files(tmp_path)
    whole = _read(files)
    assert whole[1]  # the planted bad bytes and broken line were counted
    monkeypatch.setattr(sources, "READ_BLOCK_BYTES", 61)  # cuts fall everywhere, mid-line included
    assert _read(files) == whole


def test_compressed_files_stream_like_plain_ones(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    plain = _edge_files(tmp_path)
    for path in plain:
        (tmp_path / "gz").mkdir(exist_ok=True)
        (tmp_path / "zst").mkdir(exist_ok=True)
        (tmp_path / "gz" / (path.name + ".gz")).write_bytes(gzip.compress(path.read_bytes()))
        (tmp_path / "zst" / (path.name + ".zst")).write_bytes(zstandard.ZstdCompressor().compress(path.read_bytes()))
    docs, drops = _read(plain)
    for kind in ("gz", "zst"):
        got_docs, got_drops = _read([tmp_path / kind])  # a folder finds the compressed files too
        assert [(i, t) for i, _, t in got_docs] == [(i, t) for i, _, t in docs]
        assert sorted(n for n in got_drops.values()) == sorted(drops.values())
    (tmp_path / "bad.jsonl.gz").write_bytes(gzip.compress(plain[0].read_bytes())[:-30])
    with pytest.raises(CptnbError, match="bad.jsonl.gz: not a readable gz stream"):
        _read([tmp_path / "bad.jsonl.gz"])


def test_byte_ranges_read_together_like_the_whole_file(tmp_path):
    jsonl = _edge_files(tmp_path)[0]
    units = byte_ranges(jsonl, 3000)
    assert len(units) > 3 and sum(u.length for u in units) == jsonl.stat().st_size
    assert all(jsonl.read_bytes()[u.start - 1:u.start] == b"\n" for u in units[1:])  # each starts a line
    drops = DropCounter()
    parts = [(d.id, d.text) for u in units
             for d in read_range(u.path, u.start, u.length, u.first_line, on_error="skip", drops=drops)]
    docs, whole_drops = _read([jsonl])
    assert parts == [(i, t) for i, _, t in docs]
    assert dict(drops.docs) == whole_drops
    # Only plain .jsonl larger than split_bytes is cut; compressed files and small files stay whole.
    (tmp_path / "edge.jsonl.gz").write_bytes(gzip.compress(jsonl.read_bytes(), compresslevel=0))
    assert [u.whole for u in plan_units([tmp_path / "edge.jsonl.gz", ROOT / "vi"], 3000)][0]
    assert all(u.whole for u in plan_units([ROOT / "vi", jsonl], 10**9))


def test_scale_config_reports_every_problem():
    with pytest.raises(ConfigError) as err:
        ScaleConfig(executor="spark", tasks=-1, local_tasks=0)
    text = str(err.value)
    assert "executor must be one of inprocess, local, slurm, ray" in text and "tasks must be" in text
    assert "local_tasks" in text
    with pytest.raises(ConfigError, match="slurm_partition"):
        ScaleConfig(executor="slurm")
    assert DataConfig().scale.executor == "inprocess"


def test_the_in_process_path_never_imports_datatrove(tmp_path):
    code = ("import sys; from cptnb.config import DataConfig; from cptnb.data.pipeline import CorpusStream; "
            "cfg = DataConfig(sources=['data_samples/vi']); list(CorpusStream(cfg, cfg.sources, 'vi').documents()); "
            "print('datatrove' in sys.modules)")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- the same decisions on every executor


@pytest.fixture(scope="module")
def bench_corpus(tmp_path_factory) -> Path:
    """The throughput benchmark's synthetic corpus (planted exact/near duplicates, English noise), small."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import prepare_throughput

    out = tmp_path_factory.mktemp("bench")
    prepare_throughput.build_corpus(out / "corpus", 800, 800 * 2000)
    # One large file as well, so that byte ranges are exercised by every executor.
    shards = sorted((out / "corpus").glob("*.jsonl"))
    with open(out / "corpus" / "shard-00.jsonl", "ab") as fh:
        for extra in shards[1:4]:
            fh.write(extra.read_bytes())
            extra.unlink()
    return out / "corpus"


def _bench_cfg(corpus: Path, **scale) -> DataConfig:
    return DataConfig(sources=[str(corpus)], replay_sources=[], heldout_domain=[], heldout_general=[],
                      eval_tasks=[str(ROOT / "eval")], num_proc=1, scale={"split_bytes": 150_000, **scale})


def _decisions(stream, docs) -> dict:
    """What must be equal across executors: kept documents (by hash, in order), drop reasons, report, clusters."""
    return {
        "kept": [hashlib.sha256(d.text.encode()).hexdigest() for d in docs],
        "ids": [d.id for d in docs],
        "report": stream.report(),
        "taps": [(t.name, dict(t.docs), dict(t.chars)) for t in stream.taps],
        "dedup": stream.dedup_stats,
        "hits": dict(stream.index.hits) if stream.index is not None else {},
    }


def _index():
    from cptnb.data.decontam import build_contamination_index

    return build_contamination_index([ROOT / "eval"])


@pytest.fixture(scope="module")
def inprocess(bench_corpus):
    cfg = _bench_cfg(bench_corpus)
    stream = CorpusStream(cfg, cfg.sources, "vi", _index())
    return _decisions(stream, list(stream.documents()))


def _scaled(cfg: DataConfig, work: Path, run: bool = True) -> dict:
    from cptnb.data.scale.merge import ScaledStream

    stream = ScaledStream(cfg, cfg.sources, "vi", _index(), work, cfg.scale)
    if run:
        stream.run_shards()
    return _decisions(stream, list(stream.documents()))


def test_local_executor_with_more_tasks_than_workers_decides_like_in_process(bench_corpus, inprocess, tmp_path):
    cfg = _bench_cfg(bench_corpus, executor="local", tasks=7, workers=2)
    units = plan_units(cfg.sources, cfg.scale.split_bytes)
    assert len(units) > 7 and sum(not u.whole for u in units) >= 3  # byte ranges of the large file in play
    got = _scaled(cfg, tmp_path / "work")
    assert got == inprocess
    report = got["report"]
    assert all(e["docs_in"] == e["docs_kept"] + sum(e["dropped"].values()) for e in report.values())
    dropped = {r for e in report.values() for r in e["dropped"]}
    assert {"exact_duplicate", "near_duplicate", "wrong_language"} <= dropped  # the planted problems were found
    stats = json.loads((tmp_path / "work" / "datatrove" / "stats.json").read_text())  # datatrove's own merge
    assert len(stats) == 4


def test_two_machines_splitting_the_ranks_merge_into_one_runs_result(bench_corpus, inprocess, tmp_path):
    work = tmp_path / "work"
    first = _bench_cfg(bench_corpus, executor="local", tasks=5, workers=1, local_tasks=3, local_rank_offset=0)
    with pytest.raises(CptnbError, match="2 of 5 are not done yet"):
        _scaled(first, work)
    second = _bench_cfg(bench_corpus, executor="local", tasks=5, workers=2, local_tasks=2, local_rank_offset=3)
    assert _scaled(second, work) == inprocess  # the second machine finds all 5 ranks done, and merges
    rerun = _bench_cfg(bench_corpus, executor="local", tasks=5, workers=2)
    assert _scaled(rerun, work) == inprocess  # every rank is skipped as completed; same merge


def test_changed_settings_start_the_work_folder_afresh(bench_corpus, inprocess, tmp_path):
    work = tmp_path / "work"
    _scaled(_bench_cfg(bench_corpus, executor="local", tasks=3, workers=2).replace(min_chars=10_000), work)
    assert _scaled(_bench_cfg(bench_corpus, executor="local", tasks=3, workers=2), work) == inprocess


def _planted(tmp: Path) -> Path:
    from test_pipeline import CONTAMINATED_INTRO

    vi = [json.loads(line) for line in (ROOT / "vi" / "news.jsonl").read_text(encoding="utf-8").splitlines()]
    question = json.loads((ROOT / "eval" / "wikipediaqa_vi" / "test.jsonl").read_text(encoding="utf-8").splitlines()[0])
    planted = tmp / "planted.jsonl"
    planted.write_text("\n".join([
        json.dumps({"text": vi[0]["text"]}, ensure_ascii=False), '{"text": "broken',
        json.dumps({"text": CONTAMINATED_INTRO + " " + question["question"]}, ensure_ascii=False),
        json.dumps({"text": "ok"}),
    ]) + "\n", encoding="utf-8")
    return planted


def test_prepare_on_the_local_executor_writes_what_in_process_writes(tmp_path, tiny):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_pipeline import result_config

    cfg = DataConfig(**result_config(_planted(tmp_path))).replace(scale={"split_bytes": 20_000, "tasks": 4,
                                                                          "workers": 2})
    tokenizer = tiny(method="full").tokenizer
    one = prepare(cfg, tokenizer, tmp_path / "inprocess", block_tokens=128)
    many = prepare(cfg, tokenizer, tmp_path / "local", block_tokens=128, executor="local")
    assert many.report == one.report
    assert many.packed.dataset["input_ids"] == one.packed.dataset["input_ids"]
    for name in ("heldout_domain.jsonl", "heldout_general.jsonl", "fertility.json"):
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "inprocess" / name).read_bytes()
    assert (tmp_path / "local" / "funnel.png").is_file()
    assert (tmp_path / "local" / "scale" / "general" / "plan.json").is_file()  # replay went through the executor too


# --------------------------------------------------------------------------- Slurm


FAKE_SLURM = {
    # sbatch records its arguments and script, then runs every array index here, as a one-node cluster would.
    "sbatch": """#!/bin/bash
        script="${@: -1}"
        n=$(ls "$FAKE_SLURM_LOG" | grep -c 'script$')
        cp "$script" "$FAKE_SLURM_LOG/sbatch$n.script"; echo "$@" > "$FAKE_SLURM_LOG/sbatch$n.args"
        array=$(grep -- '--array=' "$script" | sed 's/.*--array=0-\\([0-9]*\\).*/\\1/')
        if grep -q merge_stats "$script"; then echo "Submitted batch job 9$n"; exit 0; fi
        for i in $(seq 0 "$array"); do
          SLURM_ARRAY_TASK_ID=$i SLURM_JOB_ID=42 SLURM_NODELIST=localhost \\
            bash "$script" > "$FAKE_SLURM_LOG/task$n.$i.log" 2>&1 || exit 1
        done
        echo "Submitted batch job 4$n"
        """,
    "srun": """#!/bin/bash
        while [[ "$1" == -* ]]; do if [[ "$1" == -n ]]; then shift; fi; shift; done; exec "$@"
        """,
    "scontrol": "#!/bin/bash\necho localhost\n",
    "squeue": "#!/bin/bash\nexit 0\n",
}


def test_slurm_executor_writes_the_sbatch_script_and_submits_it(bench_corpus, inprocess, tmp_path, monkeypatch):
    bin_dir, log = tmp_path / "bin", tmp_path / "slurm"
    bin_dir.mkdir()
    log.mkdir()
    for name, body in FAKE_SLURM.items():
        (bin_dir / name).write_text(textwrap.dedent(body))
        (bin_dir / name).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_LOG", str(log))
    cfg = _bench_cfg(bench_corpus, executor="slurm", tasks=3, workers=2, slurm_partition="cpu", slurm_time="1:00:00",
                     slurm_cpus_per_task=4, slurm_mem_per_cpu_gb=3, poll_seconds=0.1)
    assert _scaled(cfg, tmp_path / "work") == inprocess
    script = (log / "sbatch0.script").read_text()
    for line in ("#SBATCH --partition=cpu", "#SBATCH --cpus-per-task=4", "#SBATCH --mem-per-cpu=3G",
                 "#SBATCH --time=1:00:00", "#SBATCH --array=0-2%2", "#SBATCH --job-name=cptnb-prepare"):
        assert line in script
    assert f"launch_pickled_pipeline {tmp_path / 'work' / 'datatrove' / 'executor.pik'}" in script
    assert "--qos" not in script and "--mail" not in script
    if sys.prefix != sys.base_prefix:
        assert f"source {sys.prefix}/bin/activate" in script
    assert (log / "sbatch0.args").read_text().split()[0] == "--export=ALL,RUN_OFFSET=0"
    assert "merge_stats" in (log / "sbatch1.script").read_text()  # datatrove's stats merge, after the array


def _real_slurm() -> str | None:
    """Why a real submission cannot run here (None when it can)."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "no Slurm here (Debian: apt install slurm-wlm, with slurmctld/slurmd and munge running)"
    import subprocess

    out = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True)
    if out.returncode != 0 or " up" not in out.stdout:
        return f"Slurm is installed but no partition is up (sinfo: {(out.stderr or out.stdout).strip()[:120]})"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_real_slurm() is not None, reason=str(_real_slurm()))
def test_slurm_executor_on_a_real_cluster(bench_corpus, inprocess, tmp_path):
    import subprocess

    partition = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True).stdout.split()[0]
    cfg = _bench_cfg(bench_corpus, executor="slurm", tasks=2, slurm_partition=partition.rstrip("*"), poll_seconds=1,
                     timeout_hours=0.2)
    assert _scaled(cfg, tmp_path / "work") == inprocess


# --------------------------------------------------------------------------- Ray


def _loopback_ray():
    """A local Ray cluster on 127.0.0.1 (skips with the reason when it cannot start)."""
    # On Linux Ray swaps 127.0.0.1 for the machine's address; this keeps every Ray process on loopback.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    # Its agents start slowly on a busy 2-core machine: give them minutes rather than seconds.
    os.environ.setdefault("RAY_agent_register_timeout_ms", "300000")
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install ray)")
    try:
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                 object_store_memory=200 * 1024 * 1024, configure_logging=False)
    except Exception as err:  # ray raises many kinds when its processes cannot start
        pytest.skip(f"a local Ray cluster could not start here: {type(err).__name__}: {err}"[:300])
    return ray


def test_ray_executors_tasks_run_as_its_actors_run_them(bench_corpus, inprocess, tmp_path):
    """Without a cluster: the executor is pickled as Ray ships it, and each rank runs as a Ray actor runs it."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install ray)")
    from cptnb.data.scale.executors import build_executor
    from cptnb.data.scale.merge import ScaledStream

    cfg = _bench_cfg(bench_corpus, executor="ray", tasks=3, workers=2)
    stream = ScaledStream(cfg, cfg.sources, "vi", _index(), tmp_path / "work", cfg.scale)
    executor = build_executor(stream.pipeline(), cfg.scale, stream.tasks, stream.work_dir / "datatrove")
    shipped = ray.cloudpickle.dumps(executor)  # what ray.put stores; every actor gets its own copy
    for rank in range(stream.tasks):
        ray.cloudpickle.loads(shipped)._run_for_rank(rank)
    assert executor.get_incomplete_ranks(skip_completed=True) == []
    assert _decisions(stream, list(stream.documents())) == inprocess


@pytest.mark.slow
def test_ray_executor_on_a_local_cluster_decides_like_in_process(bench_corpus, inprocess, tmp_path):
    ray = _loopback_ray()
    try:
        cfg = _bench_cfg(bench_corpus, executor="ray", tasks=3, workers=2)
        assert _scaled(cfg, tmp_path / "work") == inprocess
        assert len(list((tmp_path / "work" / "datatrove" / "completions").iterdir())) == 3
    finally:
        ray.shutdown()
