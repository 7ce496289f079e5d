"""Fixtures that run each op test once per (device, backend) that can run here.

Triton kernels run on CPU tensors through Triton's interpreter: TRITON_INTERPRET=1 is set
for those tests only (before the kernels are first imported), so the rest of the suite
keeps the automatic CPU backend.
"""

import importlib.util

import pytest
import torch

from fastunlearn.ops.backend import cpp_available

HAS_TRITON = importlib.util.find_spec("triton") is not None

DEVICE_BACKENDS = [
    pytest.param(("cpu", "torch"), id="cpu-torch"),
    pytest.param(
        ("cpu", "cpp"),
        id="cpu-cpp",
        marks=pytest.mark.skipif(not cpp_available(), reason="fastunlearn._C not built"),
    ),
    pytest.param(
        ("cpu", "triton"),
        id="cpu-triton-interpret",
        marks=pytest.mark.skipif(not HAS_TRITON, reason="triton not installed"),
    ),
    pytest.param(("cuda", "triton"), id="cuda-triton", marks=pytest.mark.cuda),
    pytest.param(("cuda", "torch"), id="cuda-torch", marks=pytest.mark.cuda),
]


@pytest.fixture(params=DEVICE_BACKENDS)
def device_backend(request, monkeypatch):
    device, backend = request.param
    if backend == "triton" and device == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    return torch.device(device), backend


@pytest.fixture(params=[torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
def dtype(request):
    return request.param


@pytest.fixture
def generator(request):
    """A fresh seed per test, printed on failure so a failing case can be replayed."""
    seed = torch.randint(0, 2**31 - 1, ()).item()
    request.node.user_properties.append(("seed", seed))
    return torch.Generator().manual_seed(seed)
