"""The three ops, forward + backward, against their eager formulation, torch.compile of it and,
for linear + NLL, Liger-Kernel's and Cut Cross-Entropy's fused linear cross-entropy; and the
hardware rates (matmul, copy) that their throughput is compared with."""

import pytest

from benchmarks.cases import LINEAR_NLL_IMPLS, OP_IMPLS, Case
from benchmarks.harness import run_case


@pytest.mark.benchmark(group="pooling fwd+bwd")
@pytest.mark.parametrize("impl", OP_IMPLS)
def test_pooling(benchmark, settings, peak_memory, impl, pooling_shape):
    case = Case(
        "pooling", dict(impl=impl, device=settings.device, dtype=settings.dtype, **pooling_shape)
    )
    run_case(benchmark, settings, case, peak_memory)


@pytest.mark.benchmark(group="npair fwd+bwd")
@pytest.mark.parametrize("impl", OP_IMPLS)
def test_npair(benchmark, settings, peak_memory, impl, npair_shape):
    case = Case(
        "npair", dict(impl=impl, device=settings.device, dtype=settings.dtype, **npair_shape)
    )
    run_case(benchmark, settings, case, peak_memory)


@pytest.mark.benchmark(group="linear_nll fwd+bwd")
@pytest.mark.parametrize("impl", LINEAR_NLL_IMPLS)
def test_linear_nll(benchmark, settings, peak_memory, impl, linear_nll_shape):
    case = Case(
        "linear_nll",
        dict(
            impl=impl, device=settings.device, dtype=settings.dtype, **linear_nll_shape, scale=1.0
        ),
    )
    run_case(benchmark, settings, case, peak_memory)


@pytest.mark.benchmark(group="linear_nll ascent fwd+bwd")
@pytest.mark.parametrize("impl", LINEAR_NLL_IMPLS)
def test_linear_nll_ascent(benchmark, settings, peak_memory, impl, ascent_shape):
    case = Case(
        "linear_nll",
        dict(impl=impl, device=settings.device, dtype=settings.dtype, **ascent_shape, scale=-1.0),
    )
    run_case(benchmark, settings, case, peak_memory)


@pytest.mark.benchmark(group="hardware matmul")
def test_matmul_rate(benchmark, settings, matmul_shape):
    run_case(benchmark, settings, Case("matmul", dict(device=settings.device, **matmul_shape)))


@pytest.mark.benchmark(group="hardware copy")
def test_copy_bandwidth(benchmark, settings, copy_shape):
    run_case(benchmark, settings, Case("copy", dict(device=settings.device, **copy_shape)))
