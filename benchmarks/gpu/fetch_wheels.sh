#!/usr/bin/env bash
# Download the wheels the GPU check installs on a machine without the internet, and slim them.
#   bash benchmarks/gpu/fetch_wheels.sh                      # CPython 3.12, x86-64 manylinux, into .whl/
#   bash benchmarks/gpu/fetch_wheels.sh --python-version 3.11 --dest /tmp/w   # the same set for another Python
# Needs only pip and a registry. The list is benchmarks/gpu/wheels.txt (pinned; `wheels.py lock` rewrites it).
# Slimming (wheels.py): unsloth loses its studio/ app, bitsandbytes keeps only its CUDA 13.0 and CPU
# libraries (CPTNB_BNB_KEEP=cuda128 keeps CUDA 12.8's instead); every RECORD stays valid.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
pyver=3.12
dest="$repo/.whl"
python=${PYTHON:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) pyver=$2; shift 2 ;;
    --dest) dest=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    -h|--help) sed -n 2,7p "$0"; exit 0 ;;
    *) echo "fetch_wheels.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$python" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python=$(command -v python3); fi
fi
abi="cp${pyver/./}"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_26_x86_64 manylinux_2_24_x86_64 \
         manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 linux_x86_64; do
  platforms+=(--platform "$p")
done
mkdir -p "$dest"
echo "[fetch_wheels] $(grep -cvE '^\s*(#|$)' "$here/wheels.txt") wheels for CPython $pyver x86-64 -> $dest"
# PIP_CONSTRAINT is emptied: a machine-wide constraints file (e.g. a torch cap) must not veto a pinned wheel.
PIP_CONSTRAINT="" "$python" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$pyver" --implementation cp --abi "$abi" --abi abi3 --abi none "${platforms[@]}" \
  -d "$dest" -r "$here/wheels.txt"
"$python" "$here/wheels.py" slim "$dest"
"$python" "$here/wheels.py" verify "$dest"
# Wheels left over from an older wheels.txt are not sent to the GPU: name them so they can be removed.
"$python" - "$dest" "$here/wheels.txt" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, str(Path(sys.argv[2]).parent))
import wheels
found, _ = wheels.find_wheels(Path(sys.argv[1]), wheels.read_pins(Path(sys.argv[2])))
extra = sorted(set(Path(sys.argv[1]).glob("*.whl")) - set(found.values()))
for path in extra:
    print(f"[fetch_wheels] not in wheels.txt (delete it to save space): {path.name}")
EOF
echo "[fetch_wheels] $(du -sh "$dest" | cut -f1) in $dest"
