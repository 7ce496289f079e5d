#!/usr/bin/env bash
# The test command of the README: every test on the CPU, the Triton kernels through
# Triton's interpreter, then the benchmark suite in its quick mode so it cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pytest -q tests "$@"
