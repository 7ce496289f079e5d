#!/usr/bin/env bash
# The test command of the README: every test on the CPU (Triton kernels through Triton's
# interpreter, DeepSpeed as two gloo ranks), then the benchmark suite in its quick mode so it
# cannot rot. Extra arguments go to the first pytest (e.g. -m cuda on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pytest -q tests "$@"
FASTUNLEARN_BENCH=quick python -m pytest -q benchmarks --benchmark-only
