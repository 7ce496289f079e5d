#!/usr/bin/env bash
# The main job of the README: installs what it needs, then runs unlearning on the embedded
# default model and prints the before/after table.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "fastunlearn demo: not yet available - the Unlearner engine and evaluation are still being built" >&2
exit 2
