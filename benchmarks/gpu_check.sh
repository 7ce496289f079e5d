#!/usr/bin/env bash
# The GPU check: one short window on a lent H100/H200, everything written under one folder.
#
#   bash benchmarks/gpu_check.sh OUT_DIR          (or OUT=... bash benchmarks/gpu_check.sh)
#
# Run from anywhere inside the repository, with .whl/ (benchmarks/fetch_wheels.sh, run once
# where a registry is reachable) at the repository root: DeepSpeed, Liger-Kernel and Cut
# Cross-Entropy come from there (the GPU image lacks them and reaches no registry). Stages, in
# order, each under `timeout` and a shared budget (GPU_CHECK_BUDGET_S, default 465 s: under 8
# minutes with the summary); a stage that fails or times out is recorded and the next one runs:
#
#   env           torch.__version__, the GPU name, nvidia-smi, pip freeze        -> env.txt
#   install       the wheels of .whl/ into /tmp/site (the line of install.sh)   -> env.txt
#   tests         python -m pytest -q tests -m cuda                             -> cuda_tests.log
#   tests_triton  the Triton kernel tests not marked cuda, which run on the GPU
#                 when there is one (test_triton_*, *_triton_* modules)          -> cuda_tests.log
#   bench_ops     pooling and N-pair B=64 D=2048 (T=1024 / K=5) vs eager and
#                 torch.compile, and a 1 GiB device copy                        -> bench_ops.json
#   bench_linear  linear_nll H=2048 V=50272 8K tokens bf16 vs Liger, CCE, eager,
#                 torch.compile; the 8192^3 bf16 matmul                         -> bench_linear_nll.json
#   ds            WPN+GA steps, OPT-1.3B and OPT-2.7B under ZeRO-2 and ZeRO-3,
#                 fused vs HF logits (deepspeed launcher, 1 GPU)                 -> deepspeed_step.jsonl
#   ds67          the same for OPT-6.7B, ZeRO-3 with CPU offload (needs >= 90 s
#                 of budget left; skipped if host memory is short)              -> deepspeed_step.jsonl
#
# Logs of the benchmark and DeepSpeed stages: bench.log, deepspeed.log; the stage table, the
# benchmark tables (benchmarks/report.py) and the step summary: summary.txt (also printed).
# Eight files in all, what a device call brings back.
#
# GPU_CHECK_STAGES=env,tests,...  runs only those stages (default: all, in the order above).
# GPU_CHECK_TINY=1  proves the wiring on a CPU: quick benchmark sizes, opt-tiny DeepSpeed steps
#                   on DS_ACCELERATOR=cpu; the CUDA tests are then deselected (no GPU).
set -uo pipefail

OUT_DIR=${1:-${OUT:-}}
if [ -z "$OUT_DIR" ]; then
    echo "usage: bash benchmarks/gpu_check.sh OUT_DIR   (or set OUT)" >&2
    exit 2
fi
mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd)
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$PWD

PY=${PYTHON:-python3}
TINY=${GPU_CHECK_TINY:-0}
BUDGET=${GPU_CHECK_BUDGET_S:-465}
STAGES=${GPU_CHECK_STAGES:-env,install,tests,tests_triton,bench_ops,bench_linear,ds,ds67}
RESERVE=15    # seconds kept for the report and the summary
MIN_STAGE=20  # a stage is not started with less than this left
START=$(date +%s)
GPU_SEEN=$(timeout 10 nvidia-smi -L 2>/dev/null | head -1 || true)

SUMMARY=$OUT_DIR/summary.txt
ENV_TXT=$OUT_DIR/env.txt
TESTS_LOG=$OUT_DIR/cuda_tests.log
BENCH_LOG=$OUT_DIR/bench.log
DS_LOG=$OUT_DIR/deepspeed.log
: >"$SUMMARY"
: >"$ENV_TXT"
STATUS_LINES=()
FAILED=()

elapsed() { echo $(($(date +%s) - START)); }
left() { echo $((BUDGET - $(elapsed) - RESERVE)); }
wanted() { [[ ",$STAGES," == *",$1,"* ]]; }
record() {  # record STAGE STATUS
    STATUS_LINES+=("$(printf '%-13s %s' "$1" "$2")")
    echo "[gpu_check] $1: $2 (at $(elapsed) s)"
}

# run_stage NAME CAP LOG MIN COMMAND...: COMMAND under timeout (SIGINT first, so pytest still
# writes its JSON; SIGKILL 20 s later), appended to LOG.
run_stage() {
    local name=$1 cap=$2 log=$3 min=$4
    shift 4
    if ! wanted "$name"; then
        return
    fi
    if [ "$TINY" = 1 ]; then
        cap=$((cap * 3))  # the Triton interpreter on a CPU is slower than any GPU
    fi
    local budget_left
    budget_left=$(left)
    if ((budget_left < min)); then
        record "$name" "SKIPPED: ${budget_left} s of the budget left (needs ${min} s)"
        FAILED+=("$name")
        return
    fi
    local limit=$((cap < budget_left ? cap : budget_left))
    local t0=$SECONDS
    echo "=== $name: $* (limit ${limit} s) ===" >>"$log"
    timeout -s INT -k 20 "$limit" "$@" >>"$log" 2>&1
    local rc=$?
    local took=$((SECONDS - t0))
    if ((rc == 0)); then
        record "$name" "ok (${took} s)"
    elif ((rc == 124 || rc == 137)); then
        record "$name" "TIMEOUT after ${limit} s (see $(basename "$log"))"
        FAILED+=("$name")
    elif [ "$name" = tests ] && ((rc == 5)) && [ -z "$GPU_SEEN" ]; then
        record "$name" "no CUDA tests collected (no GPU here; ${took} s)"
    else
        record "$name" "FAILED, exit $rc (${took} s; see $(basename "$log"))"
        FAILED+=("$name")
    fi
}

# ---------------------------------------------------------------------------------- env
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
if wanted env; then
    {
        echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  host: $(hostname)  budget: ${BUDGET} s  tiny: $TINY"
        echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown) (a copied .git may be stale)"
        echo "--- python / torch / GPU"
        timeout 60 "$PY" - <<'PY' 2>&1
import platform
import torch
print("python", platform.python_version())
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if not torch.__version__.startswith("2.11"):
    print(f"NOTE: torch {torch.__version__}; the GPU image seen so far had 2.11")
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(), torch.cuda.get_device_capability())
    print("gpu memory GiB", round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
for name in ("triton", "transformers", "accelerate", "peft", "pytest_benchmark"):
    try:
        print(name, __import__(name).__version__)
    except Exception as error:
        print(name, "not importable:", type(error).__name__, error)
PY
        echo "--- nvidia-smi"
        timeout 20 nvidia-smi 2>&1 || echo "nvidia-smi not available"
        echo "--- memory / cpus"
        grep -E 'MemTotal|MemAvailable' /proc/meminfo
        nproc
    } >>"$ENV_TXT" 2>&1
    GPU_NAME=$(grep -m1 '^gpu ' "$ENV_TXT" | cut -d' ' -f2- || true)
    record env "$(grep -m1 '^torch ' "$ENV_TXT" | cut -d' ' -f1-2)${GPU_NAME:+, ${GPU_NAME}}"
fi

# ------------------------------------------------------------------------------ install
install_wheels() {
    # Into a folder of its own, first on the path; the source archives (DeepSpeed) build there
    # against the machine's torch. `return`, not `exit`: the stages after this one still run.
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl ||
        return 1
    local archive
    for archive in .whl/*.tar.gz; do
        python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site \
            "$archive" || return 1
    done
    export PYTHONPATH=/tmp/site:$PWD
}
if wanted install; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        echo "--- install .whl/ into /tmp/site" >>"$ENV_TXT"
        t0=$SECONDS
        # Not under timeout: install_wheels exports PYTHONPATH into this shell.
        if install_wheels >>"$ENV_TXT" 2>&1; then
            record install "ok ($((SECONDS - t0)) s): $(ls .whl | wc -l) files into /tmp/site"
        else
            record install "FAILED ($((SECONDS - t0)) s; see env.txt): peers / DeepSpeed may be missing"
            FAILED+=(install)
            export PYTHONPATH=/tmp/site:$PYTHONPATH
        fi
    else
        record install "SKIPPED: no .whl/ here (Liger, CCE, DeepSpeed only if already installed)"
    fi
    if [ -d /tmp/site/bin ]; then
        export PATH=/tmp/site/bin:$PATH
    fi
fi
if wanted env; then
    {
        echo "--- pip freeze"
        timeout 60 "$PY" -m pip freeze 2>&1
        if [ -d /tmp/site ]; then
            echo "--- pip list --path /tmp/site"
            timeout 60 "$PY" -m pip list --path /tmp/site 2>&1
        fi
    } >>"$ENV_TXT"
fi

# -------------------------------------------------------------------------------- tests
run_stage tests 120 "$TESTS_LOG" "$MIN_STAGE" \
    "$PY" -m pytest -q tests -m cuda -p no:cacheprovider -rfEs --durations=15
# Kernel-level Triton tests pick CUDA when it is there but carry no cuda mark (so that the
# interpreter runs them on a CPU): -m cuda leaves them out.
run_stage tests_triton 50 "$TESTS_LOG" "$MIN_STAGE" \
    "$PY" -m pytest -q tests/ops -m "not cuda" -k "triton_" -p no:cacheprovider -rfEs \
    --durations=10

# --------------------------------------------------------------------------- benchmarks
if [ "$TINY" = 1 ]; then
    export FASTUNLEARN_BENCH=quick
    OPS_K="test_pooling or test_npair or copy"
    LINEAR_K="test_linear_nll[ or matmul"
else
    export FASTUNLEARN_BENCH=gpu
    OPS_K="(test_pooling and dim2048) or (test_npair and dim2048) or copy"
    LINEAR_K="(test_linear_nll[ and tokens8192-hidden2048) or matmul"
fi
run_stage bench_ops 60 "$BENCH_LOG" "$MIN_STAGE" \
    "$PY" -m pytest -q benchmarks/test_ops.py --benchmark-only -p no:cacheprovider -rs \
    -k "$OPS_K" --benchmark-json="$OUT_DIR/bench_ops.json"
run_stage bench_linear 90 "$BENCH_LOG" "$MIN_STAGE" \
    "$PY" -m pytest -q benchmarks/test_ops.py --benchmark-only -p no:cacheprovider -rs \
    -k "$LINEAR_K" --benchmark-json="$OUT_DIR/bench_linear_nll.json"

# ---------------------------------------------------------------------------- DeepSpeed
DS_LAUNCH=("$PY" -m deepspeed.launcher.runner --num_gpus 1)
if [ "$TINY" = 1 ]; then
    export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu}
    run_stage ds 120 "$DS_LOG" "$MIN_STAGE" "${DS_LAUNCH[@]}" benchmarks/deepspeed_step.py \
        --tiny --configs zero2,zero3 --out "$OUT_DIR"
    run_stage ds67 90 "$DS_LOG" "$MIN_STAGE" "${DS_LAUNCH[@]}" benchmarks/deepspeed_step.py \
        --tiny --configs zero3_offload --out "$OUT_DIR"
elif [ -z "$GPU_SEEN" ]; then
    for name in ds ds67; do
        if wanted "$name"; then
            record "$name" "SKIPPED: no GPU (nvidia-smi -L lists none); GPU_CHECK_TINY=1 runs opt-tiny on the CPU"
            FAILED+=("$name")
        fi
    done
else
    run_stage ds 100 "$DS_LOG" "$MIN_STAGE" "${DS_LAUNCH[@]}" benchmarks/deepspeed_step.py \
        --models opt-1.3b,opt-2.7b --configs zero2,zero3 --warmup 1 --steps 3 --out "$OUT_DIR"
    run_stage ds67 240 "$DS_LOG" 90 "${DS_LAUNCH[@]}" benchmarks/deepspeed_step.py \
        --models opt-6.7b --configs zero3_offload --warmup 1 --steps 1 --out "$OUT_DIR"
fi

# ------------------------------------------------------------------------------ summary
{
    echo "# GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(elapsed) s of ${BUDGET} s"
    echo
    grep -E '^(torch |gpu |NOTE)' "$ENV_TXT" 2>/dev/null
    echo
    echo "## Stages"
    printf '%s\n' "${STATUS_LINES[@]}"
    if ((${#FAILED[@]})); then
        echo "failed, timed out or skipped: ${FAILED[*]}"
    else
        echo "every stage ran"
    fi
    if [ -f "$TESTS_LOG" ]; then
        echo
        echo "## CUDA tests (last lines of cuda_tests.log)"
        grep -E '(passed|failed|error|deselected|no tests ran)' "$TESTS_LOG" | tail -3
        grep -E '^(FAILED|ERROR) ' "$TESTS_LOG" | head -20
    fi
    if [ -f "$OUT_DIR/deepspeed_step.jsonl" ]; then
        echo
        echo "## DeepSpeed steps (deepspeed_step.jsonl)"
        timeout 60 "$PY" benchmarks/deepspeed_step.py --summarise --out "$OUT_DIR" 2>&1 | tail -20
    fi
    reports=()
    for file in "$OUT_DIR/bench_ops.json" "$OUT_DIR/bench_linear_nll.json"; do
        if [ -s "$file" ]; then
            reports+=("$file")
        fi
    done
    if ((${#reports[@]})); then
        echo
        echo "## Benchmarks (python benchmarks/report.py ${reports[*]##*/})"
        timeout 60 "$PY" benchmarks/report.py "${reports[@]}" 2>&1
    fi
} >>"$SUMMARY"
cat "$SUMMARY"
echo "[gpu_check] outputs in $OUT_DIR: $(ls "$OUT_DIR" | tr '\n' ' ')"
((${#FAILED[@]} == 0))
