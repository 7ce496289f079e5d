"""Size modes for ``pytest benchmarks --benchmark-only``.

Pick one with ``--bench-mode=quick|cpu|gpu`` or ``FASTUNLEARN_BENCH=quick|cpu|gpu``:

* ``quick``: tiny sizes, two rounds, no torch.compile; what CI runs so the suite cannot rot.
  The default without CUDA. Runs on CUDA when present, else on CPU.
* ``cpu``: the sizes a CPU run of SmolLM2-135M uses (hidden 576, vocabulary 49152), fp32.
* ``gpu``: OPT output heads (H in 768/2048/2560/4096, V = 50272), 1K-32K tokens, bf16, and
  full steps at OPT-125M / OPT-1.3B dimensions. The default with CUDA.

Each ``*_shape`` fixture is parametrised with the mode's sizes; a benchmark group holds the
implementations of one thing at one size.
"""

from __future__ import annotations

import os

import pytest
import torch

from benchmarks.harness import CpuPeakMemory, ModeSettings, cuda_peak_memory
from fastunlearn.ops.backend import cpp_available

MODE_ENV = "FASTUNLEARN_BENCH"
MODES = ("quick", "cpu", "gpu")
OPT_HEADS = (768, 2048, 2560, 4096)  # OPT-125M, 1.3B, 2.7B, 6.7B
OPT_VOCAB = 50272
SETTINGS = pytest.StashKey[ModeSettings]()
LOAD_AT_START = pytest.StashKey[tuple]()


def _mode_settings(mode: str) -> ModeSettings:
    cuda = torch.cuda.is_available()
    if mode == "quick":
        return ModeSettings(
            name=mode,
            device="cuda" if cuda else "cpu",
            dtype="bfloat16" if cuda else "float32",
            rounds=2,
            warmup_seconds=0.0,
            min_round_seconds=0.0,
            torch_compile=False,
            sizes={
                "pooling_shape": [dict(batch=4, seq=32, dim=64)],
                "npair_shape": [dict(batch=4, cands=5, dim=64)],
                "linear_nll_shape": [dict(tokens=256, hidden=64, vocab=1024)],
                "ascent_shape": [dict(tokens=256, hidden=64, vocab=1024)],
                "matmul_shape": [dict(size=256, dtype="float32"), dict(size=256, dtype="bfloat16")],
                "copy_shape": [dict(mebibytes=4)],
                "step_shape": [
                    dict(model="opt-tiny", prompts=1, negatives=2, prompt_len=8, response_len=8)
                ],
            },
        )
    if mode == "cpu":
        return ModeSettings(
            name=mode,
            device="cpu",
            dtype="float32",
            rounds=3,
            warmup_seconds=2.0,
            min_round_seconds=0.02,
            torch_compile=True,
            sizes={
                "pooling_shape": [dict(batch=40, seq=256, dim=576)],
                "npair_shape": [dict(batch=8, cands=5, dim=576)],
                "linear_nll_shape": [dict(tokens=2048, hidden=576, vocab=49152)],
                "ascent_shape": [dict(tokens=2048, hidden=576, vocab=49152)],
                # fp32 only: the ops run in fp32 here, and a CPU without native bf16 takes
                # minutes for one 2048^3 bf16 product.
                "matmul_shape": [dict(size=2048, dtype="float32")],
                "copy_shape": [dict(mebibytes=256)],
                "step_shape": [
                    dict(model="opt-125m", prompts=1, negatives=4, prompt_len=32, response_len=64)
                ],
            },
        )
    if mode == "gpu":
        return ModeSettings(
            name=mode,
            device="cuda",
            dtype="bfloat16",
            rounds=20,
            warmup_seconds=1.0,
            min_round_seconds=0.01,
            torch_compile=True,
            sizes={
                # 64 sequences of 1024 tokens: 96-512 MiB of hidden states, enough to time the
                # device's bandwidth rather than the launches.
                "pooling_shape": [dict(batch=64, seq=1024, dim=h) for h in OPT_HEADS],
                "npair_shape": [dict(batch=64, cands=5, dim=h) for h in OPT_HEADS],
                "linear_nll_shape": [
                    dict(tokens=n, hidden=h, vocab=OPT_VOCAB)
                    for h in OPT_HEADS
                    for n in (1024, 4096, 8192, 16384, 32768)
                ],
                # Ascent runs the same kernels with the sign folded in: one size shows it is free.
                "ascent_shape": [dict(tokens=8192, hidden=2048, vocab=OPT_VOCAB)],
                "matmul_shape": [dict(size=8192, dtype="bfloat16")],
                "copy_shape": [dict(mebibytes=1024)],
                "step_shape": [
                    dict(model=name, prompts=4, negatives=4, prompt_len=64, response_len=192)
                    for name in ("opt-125m", "opt-1.3b", "opt-2.7b")
                ],
            },
        )
    raise pytest.UsageError(f"benchmark mode must be one of {MODES}, got {mode!r}")


def pytest_addoption(parser):
    parser.addoption(
        "--bench-mode",
        choices=MODES,
        default=None,
        help=f"benchmark sizes (default: ${MODE_ENV}, else gpu with CUDA and quick without)",
    )


def pytest_configure(config):
    mode = (
        config.getoption("--bench-mode")
        or os.environ.get(MODE_ENV)
        or ("gpu" if torch.cuda.is_available() else "quick")
    )
    config.stash[SETTINGS] = _mode_settings(mode)
    config.stash[LOAD_AT_START] = os.getloadavg()


def pytest_report_header(config):
    settings = config.stash[SETTINGS]
    return (
        f"fastunlearn benchmarks: mode={settings.name} device={settings.device} "
        f"dtype={settings.dtype} cpp_available={cpp_available()} torch={torch.__version__} "
        f"threads={torch.get_num_threads()}"
    )


def pytest_benchmark_update_machine_info(config, machine_info):
    settings = config.stash[SETTINGS]
    machine_info["fastunlearn"] = {
        "mode": settings.name,
        "device": torch.cuda.get_device_name()
        if settings.device == "cuda" and torch.cuda.is_available()
        else "cpu",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpp_available": cpp_available(),
        # On a shared machine other jobs' load skews timings: recorded so a reader can tell.
        "load_average_start": config.stash[LOAD_AT_START],
        "load_average_end": os.getloadavg(),
    }


def pytest_generate_tests(metafunc):
    sizes = metafunc.config.stash[SETTINGS].sizes
    for fixture, shapes in sizes.items():
        if fixture in metafunc.fixturenames:
            ids = ["-".join(f"{key}{value}" for key, value in shape.items()) for shape in shapes]
            metafunc.parametrize(fixture, shapes, ids=ids)


@pytest.fixture(scope="session")
def settings(pytestconfig) -> ModeSettings:
    current = pytestconfig.stash[SETTINGS]
    if current.device == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"the {current.name} mode needs a CUDA device")
    return current


@pytest.fixture(scope="session")
def peak_memory(settings):
    if settings.device == "cuda":
        yield cuda_peak_memory
        return
    measure = CpuPeakMemory()
    yield measure
    measure.close()
