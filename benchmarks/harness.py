"""Timing and peak-memory measurement shared by the suites.

Timing: ``run_case`` builds a case's inputs outside the timed region and times its ``run``
with ``benchmark.pedantic``; the device is synchronised inside the timed call, so a CUDA
measurement covers the kernels and not only their launch. Untimed warm-up calls come first
(see ``_warm_up``); calls shorter than the mode's ``min_round_seconds`` are repeated within
a round (pytest-benchmark reports per call).

Peak memory, recorded in ``extra_info["peak_memory_bytes"]``, is the extra memory one call
needs above the steady state in which its inputs (and a model, for a step) already live:

* CUDA: ``torch.cuda.max_memory_allocated()`` after the call minus ``memory_allocated()``
  before it, in this process.
* CPU: the resident-set high-water mark in a separate worker process (``memory_worker.py``)
  that rebuilds the case from its arguments. The worker calls it once (lazy initialisation,
  compilation), resets the kernel's high-water mark (``echo 5 > /proc/self/clear_refs``), reads
  VmRSS, calls it again and reports VmHWM - VmRSS. It runs with ``MALLOC_MMAP_THRESHOLD_``
  fixed at 64 KiB so glibc returns every larger block to the kernel when it is freed: memory
  a previous call freed cannot hide this call's peak. Counting the whole process catches what
  a tensor-level tracker cannot see (oneDNN/BLAS workspaces, C++ kernel buffers). A separate
  process also keeps that allocator setting away from the timings.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks.cases import Case, Unavailable, Workload, build

REPO_ROOT = Path(__file__).resolve().parent.parent
COUNT_TO_RATE = {"tokens": "tokens_per_s", "flop": "flop_per_s", "bytes": "bytes_per_s"}


@dataclasses.dataclass(frozen=True)
class ModeSettings:
    """What one size mode runs: where, in which dtype, how many rounds, at which sizes."""

    name: str
    device: str
    dtype: str
    rounds: int
    warmup_seconds: float
    min_round_seconds: float
    # Whether the torch.compile peer runs: its first compile costs 10-45 s on a small CPU.
    torch_compile: bool
    sizes: dict  # fixture name -> list of keyword dicts for the case builders


def _synchronised(run, device: str):
    if device != "cuda":
        return run

    def run_and_wait():
        result = run()
        torch.cuda.synchronize()
        return result

    return run_and_wait


def _warm_up(run, warmup_seconds: float, min_round_seconds: float) -> int:
    """Calls ``run`` untimed until ``warmup_seconds`` have passed, at least once, and returns
    the calls per round that make a round last ``min_round_seconds`` at the last call's speed.

    Small ops on a CPU take many calls to settle (thread pools, allocator); one call pays for
    lazy initialisation and compilation."""
    deadline = time.perf_counter() + warmup_seconds
    while True:
        start = time.perf_counter()
        run()
        end = time.perf_counter()
        if end >= deadline:
            return max(1, math.ceil(min_round_seconds / max(end - start, 1e-9)))


def run_case(benchmark, settings: ModeSettings, case: Case, peak_memory=None) -> None:
    """Time ``case`` into ``benchmark`` (grouped by the marker's group and the case's shape)."""
    if case.impl == "compiled" and not settings.torch_compile:
        pytest.skip(
            f"torch.compile is left out of the {settings.name} mode: its first compile alone "
            "takes 10-45 s on a small CPU (FASTUNLEARN_BENCH=cpu or gpu runs it)"
        )
    try:
        workload = build(case)
    except Unavailable as reason:
        pytest.skip(str(reason))
    benchmark.group = f"{benchmark.group or case.builder} | {case.shape_label}"
    run = _synchronised(workload.run, settings.device)
    iterations = _warm_up(run, settings.warmup_seconds, settings.min_round_seconds)
    benchmark.pedantic(run, rounds=settings.rounds, iterations=iterations)
    info = benchmark.extra_info
    info.update(case.kwargs)
    info.update(workload.info)
    if benchmark.stats is not None:  # None under --benchmark-disable: nothing was timed
        mean = benchmark.stats.stats.mean
        for count, rate in COUNT_TO_RATE.items():
            if count in workload.info:
                info[rate] = workload.info[count] / mean
    if peak_memory is not None:
        info.update(peak_memory(case, workload))


def cuda_peak_memory(case: Case, workload: Workload) -> dict:
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    workload.run()
    torch.cuda.synchronize()
    return {
        "peak_memory_bytes": torch.cuda.max_memory_allocated() - before,
        "peak_memory_method": "cuda max_memory_allocated delta",
    }


class CpuPeakMemory:
    """Measures CPU cases in one long-lived worker process (see the module docstring)."""

    def __init__(self):
        self._worker: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(64 << 10))
        return subprocess.Popen(
            [sys.executable, "-m", "benchmarks.memory_worker"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def __call__(self, case: Case, workload: Workload) -> dict:
        if self._worker is None:
            self._worker = self._start()
        self._worker.stdin.write(json.dumps(dataclasses.asdict(case)) + "\n")
        self._worker.stdin.flush()
        reply = self._worker.stdout.readline()
        if not reply:
            code = self._worker.wait()
            self._worker = None
            return {
                "peak_memory_error": f"memory worker exited with status {code} (out of memory?)"
            }
        return json.loads(reply)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.stdin.close()
            self._worker.wait()
            self._worker.stdout.close()
            self._worker = None
