#!/usr/bin/env bash
# Build the sdist and wheel, install the wheel into a fresh environment outside the
# repository with the core dependencies only (torch; triton for its CPU interpreter), and
# check there: the command line and its help, `import fastunlearn`, the bundled configs and
# the ops tests. Run inside the project's environment (build, torch, setuptools installed).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# --no-isolation: the wheel carries the C++ kernels built against the installed torch.
if ! python -m build --no-isolation --sdist --wheel --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1; then
    cat "$WORK/build.log"
    exit 1
fi
ls "$WORK/dist"
python3 -m venv "$WORK/env"
"$WORK/env/bin/python" -m pip install -q torch==2.13.0
"$WORK/env/bin/python" -m pip install -q "$(ls "$WORK"/dist/*.whl)[triton]" pytest
cd "$WORK"  # nothing of the repository on the path from here on
"$WORK/env/bin/fastunlearn" --help >/dev/null
"$WORK/env/bin/fastunlearn" demo --help >/dev/null
"$WORK/env/bin/python" - <<'PY'
import fastunlearn
from fastunlearn.resources import bundled_configs, resolve_path

assert "site-packages" in fastunlearn.__file__, fastunlearn.__file__
assert resolve_path("fastunlearn:configs/demo.yaml").is_file()
assert resolve_path("fastunlearn:demo_data/harmful_eval.jsonl").is_file()
import torch  # noqa: F401 - loads the libraries the C++ extension links to
import fastunlearn._C  # the C++ kernels are in the wheel
print(f"fastunlearn {fastunlearn.__version__} from the wheel; configs: {bundled_configs()}")
PY
# The ops tests, copied out so that the repository's source cannot shadow the wheel.
mkdir -p "$WORK/tests"
cp "$REPO/tests/__init__.py" "$REPO/tests/conftest.py" "$WORK/tests/"
cp -r "$REPO/tests/ops" "$WORK/tests/ops"
printf '[pytest]\nmarkers =\n    cuda: needs a CUDA device\n' > "$WORK/pytest.ini"
"$WORK/env/bin/python" -m pytest -q -p no:cacheprovider "$WORK/tests/ops"
echo "wheel checked"
