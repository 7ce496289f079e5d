#!/usr/bin/env bash
# Fills .whl/ (git-ignored) with what the GPU machines lack and cannot download themselves:
# DeepSpeed (a source archive: it builds its ops at run time) and the pure-Python or manylinux
# wheels it and the engine need there, plus the two peers the benchmarks compare against.
# Their image runs Python 3.12, so the wheels are picked for that, whatever runs this script.
# Run once, on a machine that reaches a package registry; gpu_check.sh installs them.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
mkdir -p .whl
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${platforms[@]}" --dest .whl \
    liger-kernel cut-cross-entropy \
    datasets dill multiprocess omegaconf rouge-score nltk gguf \
    hjson pydantic pydantic-core annotated-types typing-inspection typing-extensions
python3 -m pip download -q --no-deps --no-binary=:all: --dest .whl deepspeed
ls .whl
