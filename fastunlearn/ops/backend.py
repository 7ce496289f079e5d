"""The one place that decides which implementation runs an op.

Order of precedence: the ``backend=`` keyword of an op, then the ``FASTUNLEARN_BACKEND``
environment variable, then the automatic choice:

* CUDA tensors -> ``"triton"``;
* CPU tensors  -> ``"triton"`` when ``TRITON_INTERPRET=1`` (Triton's interpreter, used by CI),
  else ``"cpp"`` when the C++ extension ``fastunlearn._C`` is built, else ``"torch"``.

``"torch"`` is plain PyTorch with explicit backward formulas (for ``linear_nll``: chunked,
never holding the full logits); the readable references in each op file are separate and
serve as ground truth in tests.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os

import torch

BACKENDS = ("triton", "cpp", "torch")
ENV_VAR = "FASTUNLEARN_BACKEND"

logger = logging.getLogger("fastunlearn")


@functools.cache
def triton_available() -> bool:
    try:
        importlib.import_module("triton")
    except ImportError:
        return False
    return True


@functools.cache
def cpp_available() -> bool:
    try:
        importlib.import_module("fastunlearn._C")
    except ImportError:
        return False
    return True


def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def _announce_cpu_fallback() -> None:
    logger.warning(
        "fastunlearn: C++ CPU kernels (fastunlearn._C) are not built; CPU tensors use the "
        "PyTorch path. Build them with `pip install --no-build-isolation -e .`."
    )


def _automatic(device: torch.device) -> str:
    if device.type == "cuda":
        return "triton" if triton_available() else "torch"
    if triton_interpret() and triton_available():
        return "triton"
    if device.type == "cpu":
        if cpp_available():
            return "cpp"
        _announce_cpu_fallback()
    return "torch"


def _check_usable(backend: str, device: torch.device) -> None:
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("backend 'triton' requested but the triton package is not installed")
        if device.type != "cuda" and not triton_interpret():
            raise RuntimeError(
                f"backend 'triton' needs CUDA tensors (got {device.type}); set TRITON_INTERPRET=1 "
                "to run Triton kernels on CPU tensors through the interpreter"
            )
    elif backend == "cpp":
        if device.type != "cpu":
            raise RuntimeError(f"backend 'cpp' runs on CPU tensors only (got {device.type})")
        if not cpp_available():
            raise RuntimeError(
                "backend 'cpp' requested but fastunlearn._C is not built; "
                "run `pip install --no-build-isolation -e .` with a C++ compiler present"
            )


def select_backend(device: torch.device, requested: str | None = None) -> str:
    """Return the backend name that runs an op on tensors living on ``device``."""
    if torch.compiler.is_compiling():
        # Decided once, when the graph is traced, and kept in it as a constant: the checks
        # import modules, which a trace cannot follow.
        return _traced_choice(device.type, requested)
    return _choose(device, requested)


@torch.compiler.assume_constant_result
def _traced_choice(device_type: str, requested: str | None) -> str:
    return _choose(torch.device(device_type), requested)


def _choose(device: torch.device, requested: str | None) -> str:
    choice = requested if requested is not None else os.environ.get(ENV_VAR) or None
    if choice is None or choice == "auto":
        return _automatic(device)
    if choice not in BACKENDS:
        source = "backend" if requested is not None else ENV_VAR
        raise ValueError(f"{source}={choice!r} is not one of {BACKENDS + ('auto',)}")
    _check_usable(choice, device)
    return choice


def kernels(backend: str):
    """The module implementing the kernel contract (see ``torch_kernels``) for ``backend``."""
    return importlib.import_module(f"fastunlearn.ops.{backend}_kernels")
