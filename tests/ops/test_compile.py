"""The ops under torch.compile(fullgraph=True): traced with no graph break, forward and
backward, with the values of eager mode, on every backend that runs here."""

import pytest
import torch
import torch._dynamo as dynamo

from fastunlearn.ops import linear_nll, npair_loss, position_weighted_mean_pool
from tests.ops.utils import assert_close


@pytest.fixture(autouse=True)
def fresh_dynamo():
    dynamo.reset()  # each test traces anew: no graph is reused from another test's inputs
    yield
    dynamo.reset()


def graph_breaks(function, *inputs) -> list[str]:
    return [str(reason.reason) for reason in dynamo.explain(function)(*inputs).break_reasons]


def eager_and_compiled(function, inputs, compiler="aot_eager"):
    """(eager, compiled) results and gradients of ``function(*inputs).sum()``."""
    results = []
    for run in (function, torch.compile(function, fullgraph=True, backend=compiler)):
        leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
        out = run(*leaves)
        grads = torch.autograd.grad(
            out.float().sum(),
            [t for t in leaves if t.requires_grad],
            allow_unused=True,
            materialize_grads=True,
        )
        results.append((out.detach(), grads))
    return results


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
def test_linear_nll_traces_whole_and_matches_eager(
    device_backend, dtype, generator, reduction, with_bias
):
    device, backend = device_backend
    n, hidden, vocab = 13, 24, 77
    x = torch.randn(n, hidden, generator=generator).to(device, dtype).requires_grad_()
    weight = torch.randn(vocab, hidden, generator=generator).to(device, dtype).requires_grad_()
    bias = torch.randn(vocab, generator=generator).to(device, dtype).requires_grad_()
    labels = torch.randint(0, vocab, (n,), generator=generator).to(device)
    labels[::4] = -100
    token_weight = torch.rand(n, generator=generator).to(device).requires_grad_()

    def loss(x, weight, bias, token_weight):
        return linear_nll(
            x,
            weight,
            labels,
            bias if with_bias else None,
            token_weight,
            scale=-1.0,
            reduction=reduction,
            backend=backend,
        )

    inputs = (x, weight, bias, token_weight)
    assert graph_breaks(loss, *inputs) == []
    (eager, eager_grads), (compiled, compiled_grads) = eager_and_compiled(loss, inputs)
    assert_close(compiled, eager, dtype)
    for got, want in zip(compiled_grads, eager_grads, strict=True):
        assert_close(got, want, dtype)


def test_linear_nll_under_inductor(generator):
    # The default compiler once (it builds C++ for the CPU graph: tens of seconds).
    x = torch.randn(9, 16, generator=generator, requires_grad=True)
    weight = torch.randn(40, 16, generator=generator, requires_grad=True)
    labels = torch.randint(0, 40, (9,), generator=generator)
    (eager, eager_grads), (compiled, compiled_grads) = eager_and_compiled(
        lambda x, w: linear_nll(x, w, labels), (x, weight), compiler="inductor"
    )
    assert_close(compiled, eager, torch.float32)
    for got, want in zip(compiled_grads, eager_grads, strict=True):
        assert_close(got, want, torch.float32)


def test_pooling_traces_whole_and_matches_eager(device_backend, dtype, generator):
    device, backend = device_backend
    hidden = torch.randn(3, 9, 20, generator=generator).to(device, dtype).requires_grad_()
    mask = torch.rand(3, 9, generator=generator).to(device) > 0.4
    mask[1] = False  # an empty row: zeros

    def pool(hidden):
        return position_weighted_mean_pool(hidden, mask, backend=backend)

    assert graph_breaks(pool, hidden) == []
    (eager, eager_grads), (compiled, compiled_grads) = eager_and_compiled(pool, (hidden,))
    assert_close(compiled, eager, dtype)
    assert_close(compiled_grads[0], eager_grads[0], dtype)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "cand_mask"])
def test_npair_traces_whole_and_matches_eager(device_backend, dtype, generator, reduction, masked):
    device, backend = device_backend
    anchor = torch.randn(4, 10, generator=generator).to(device, dtype).requires_grad_()
    cand = torch.randn(4, 5, 10, generator=generator).to(device, dtype).requires_grad_()
    cand_mask = None
    if masked:
        cand_mask = torch.ones(4, 5, dtype=torch.bool, device=device)
        cand_mask[0, 3:] = False

    def loss(anchor, cand):
        return npair_loss(anchor, cand, 0.3, "cosine", cand_mask, reduction, backend=backend)

    assert graph_breaks(loss, anchor, cand) == []
    (eager, eager_grads), (compiled, compiled_grads) = eager_and_compiled(loss, (anchor, cand))
    assert_close(compiled, eager, dtype)
    for got, want in zip(compiled_grads, eager_grads, strict=True):
        assert_close(got, want, dtype)
