"""The C++ backend is bitwise reproducible: same inputs, same thread count -> same bits.

Its kernels use no atomics and reduce in a fixed order; this checks outputs and gradients of
each op over repeated runs, at sizes large enough for the parallel paths to split the work.
"""

import pytest
import torch

pytest.importorskip("fastunlearn._C", reason="C++ kernels (fastunlearn._C) not built")

from fastunlearn.ops import linear_nll, npair_loss, position_weighted_mean_pool  # noqa: E402

REPEATS = 3
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])


def assert_runs_identical(run):
    first = run()
    for _ in range(REPEATS - 1):
        # Allocate in between so that buffers land at other addresses on the next run.
        _ = torch.empty(12345)
        for expected, actual in zip(first, run(), strict=True):
            assert actual.dtype == expected.dtype
            assert torch.equal(actual, expected)


@DTYPES
def test_pooling_is_deterministic(dtype):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(6, 70, 600, generator=generator).to(dtype)
    mask = torch.rand(6, 70, generator=generator) < 0.8
    grad = torch.randn(6, 600, generator=generator).to(dtype)

    def run():
        leaf = hidden.clone().requires_grad_()
        pooled = position_weighted_mean_pool(leaf, mask, backend="cpp")
        pooled.backward(grad)
        return pooled.detach(), leaf.grad

    assert_runs_identical(run)


@DTYPES
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_npair_is_deterministic(dtype, similarity):
    generator = torch.Generator().manual_seed(1)
    anchor = torch.randn(64, 96, generator=generator).to(dtype)
    cand = torch.randn(64, 6, 96, generator=generator).to(dtype)
    cand_mask = torch.rand(64, 6, generator=generator) < 0.7
    cand_mask[:, 0] = True

    def run():
        a, c = anchor.clone().requires_grad_(), cand.clone().requires_grad_()
        loss, logits = npair_loss(
            a, c, 0.1, similarity, cand_mask, return_logits=True, backend="cpp"
        )
        loss.backward()
        return loss.detach(), logits, a.grad, c.grad

    assert_runs_identical(run)


@DTYPES
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_linear_nll_is_deterministic(dtype, reduction):
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(150, 48, generator=generator).to(dtype)
    weight = (torch.randn(1001, 48, generator=generator) / 48**0.5).to(dtype)
    bias = torch.randn(1001, generator=generator).to(dtype)
    labels = torch.randint(0, 1001, (150,), generator=generator)
    labels[torch.rand(150, generator=generator) < 0.3] = -100
    token_weight = torch.rand(150, generator=generator)
    grad_out = torch.randn(150, generator=generator) if reduction == "none" else torch.tensor(1.0)

    def run():
        leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
        loss, logprobs = linear_nll(
            leaves[0],
            leaves[1],
            labels,
            leaves[2],
            token_weight,
            -0.5,
            reduction=reduction,
            chunk_size=32,
            return_token_logprobs=True,
            backend="cpp",
        )
        loss.backward(grad_out)
        return loss.detach(), logprobs, *[t.grad for t in leaves]

    assert_runs_identical(run)
