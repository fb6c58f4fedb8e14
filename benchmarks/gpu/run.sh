#!/usr/bin/env bash
# The GPU check of issue #14 in one call, run from the repository root:
#   bash benchmarks/gpu/run.sh               # CUDA machine: install what the image lacks from .whl/, run every step
#   bash benchmarks/gpu/run.sh --dry-run     # CPU: the same steps on tiny shapes (tests/unit/test_gpu_check.py)
#   bash benchmarks/gpu/run.sh --no-install  # CUDA machine whose environment has the GPU stack (make install)
# Results go to $OUT (default runs/gpu_check): summary.json, summary.md, check.log, logs/<step>.log,
# throughput/train_throughput.{json,md}. Other options: python benchmarks/gpu/check.py --help.
# Python: $PYTHON, else .venv/bin/python when it exists, else python3 (the GPU image's).
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
export OUT=${OUT:-$repo/runs/gpu_check}
mkdir -p "$OUT"
python=${PYTHON:-}
if [ -z "$python" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python=$(command -v python3 || command -v python); fi
fi
echo "[gpu-check] $("$python" --version 2>&1) at $python; OUT=$OUT; $(nvidia-smi -L 2>/dev/null | head -1 || echo 'no nvidia-smi')"
"$python" "$repo/benchmarks/gpu/check.py" --out "$OUT" "$@" 2>&1 | tee "$OUT/check.log"
exit "${PIPESTATUS[0]}"
