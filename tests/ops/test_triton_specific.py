"""Triton kernel paths the shared op tests' small shapes never reach: multi-block loops over
D and V, clamped cosine norms, -inf logits. Kernels are compared directly with torch_kernels."""

import importlib
import importlib.util

import pytest
import torch

from fastunlearn.ops import torch_kernels
from fastunlearn.ops.pooling import position_weights

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="triton not installed"
)


@pytest.fixture
def device(monkeypatch):
    if torch.cuda.is_available():
        return torch.device("cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    return torch.device("cpu")


def triton_kernels():
    return importlib.import_module("fastunlearn.ops.triton_kernels")


def close(actual, expected, tol=1e-5):
    # Relative to the largest magnitude: long dot products cancel, so the summation order
    # shows in the small entries.
    scale = expected.float().abs().nan_to_num(posinf=0.0).max().clamp_min(1.0)
    torch.testing.assert_close(
        (actual.float() / scale).cpu(), (expected.float() / scale).cpu(), rtol=tol, atol=tol
    )


@pytest.mark.parametrize(
    "shape", [(1, 70, 130), (1, 3, 600)], ids=["multi-T-D-blocks", "multi-D-blocks"]
)
def test_pooling_multi_block(device, shape):
    batch, length, dim = shape
    hidden = torch.randn(shape, device=device)
    mask = torch.rand(batch, length, device=device) > 0.3
    mask[:, 0] = True
    weights = position_weights(mask)
    grad = torch.randn(batch, dim, device=device)
    kernels = triton_kernels()
    close(kernels.pool_forward(hidden, weights), torch_kernels.pool_forward(hidden, weights))
    close(
        kernels.pool_backward(grad, weights, hidden.dtype),
        torch_kernels.pool_backward(grad, weights, hidden.dtype),
    )


# (B, K, D): K=64 narrows the D block to 128, K=2 with D > 4096 needs two 4096-wide blocks.
@pytest.mark.parametrize(
    "shape", [(2, 64, 200), (1, 2, 4100), (3, 4, 33)], ids=lambda s: "x".join(map(str, s))
)
@pytest.mark.parametrize("cosine", [True, False], ids=["cosine", "dot"])
@pytest.mark.parametrize("tiny_norms", [False, True], ids=["normal", "clamped-norms"])
def test_npair_blocks_and_clamped_norms(device, shape, cosine, tiny_norms):
    batch, k, dim = shape
    # Entries of size 1/sqrt(D): dot products of order 1, as unit-norm embeddings give. Raw
    # N(0, 1) rows at D=200 make dot logits of hundreds, whose fp32 rounding alone moves the
    # softmax past a 1e-5 tolerance now and then (measured: 2.9e-5 once in CI).
    anchor = torch.randn(batch, dim, device=device) * dim**-0.5
    cand = torch.randn(batch, k, dim, device=device) * dim**-0.5
    if tiny_norms:  # norms below eps: the gradient is grad_unit / eps, with no radial projection
        anchor[0] *= 1e-10
        cand[-1, 1] = 0.0
    mask = torch.rand(batch, k, device=device) > 0.4
    mask[:, :2] = True
    grad_loss = torch.rand(batch, device=device)
    args = (1 / 0.07, cosine, 1e-8)
    kernels = triton_kernels()
    loss, logits = kernels.npair_forward(anchor, cand, mask, *args)
    ref_loss, ref_logits = torch_kernels.npair_forward(anchor, cand, mask, *args)
    close(loss, ref_loss)
    close(logits, ref_logits)
    grads = kernels.npair_backward(grad_loss, anchor, cand, mask, logits, *args)
    ref_grads = torch_kernels.npair_backward(grad_loss, anchor, cand, mask, ref_logits, *args)
    for got, ref in zip(grads, ref_grads, strict=True):
        close(got, ref)


def rounded_like_the_kernel(x, weight, bias, labels, coef, chunk):
    """fp32 math rounded where the kernel rounds by design: the logits block (the input
    dtype, as cuBLAS writes it), dL/dlogits (written over that block) and grad_weight once per
    token chunk. Against plain fp32 the bf16 logits alone move softmax by up to |logit| * 2^-8,
    which no fixed tolerance covers at logits of this test's size (about 25)."""
    dtype, x32, w32 = x.dtype, x.float(), weight.float()
    nll = torch.zeros(len(x), device=x.device)
    grad_x = torch.zeros(x.shape, device=x.device)
    grad_b = torch.zeros(len(weight), device=x.device)
    grad_w = None
    for start in range(0, len(x), chunk):
        rows = slice(start, start + chunk)
        chunk_labels, valid = labels[rows], labels[rows] >= 0
        logits = torch.addmm(bias.float(), x32[rows], w32.t()).to(dtype).float()
        lse = logits.logsumexp(1)
        target = logits.gather(1, chunk_labels.clamp_min(0)[:, None])[:, 0]
        nll[rows] = torch.where(valid, lse - target, 0.0)
        onehot = torch.nn.functional.one_hot(chunk_labels.clamp_min(0), len(weight))
        grad = coef[rows, None] * ((logits - lse[:, None]).exp() - onehot)
        grad = torch.where(valid[:, None], grad, 0.0).to(dtype).float()
        grad_x[rows] = grad @ w32
        part = grad.t() @ x32[rows]
        grad_w = part.to(dtype) if grad_w is None else (grad_w.float() + part).to(dtype)
        grad_b += grad.sum(0)
    return nll, grad_x.to(dtype), grad_w, grad_b.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(
    "budget", [None, 1024], ids=["one-vocab-block-of-row-blocks", "vocab-blocks-of-256"]
)
def test_linear_nll_vocab_blocks(device, dtype, budget, monkeypatch):
    """Token chunks of 2 (grad_weight accumulated over chunks), a vocabulary swept in one block
    of five 4096-wide row blocks or in 65 blocks of 256, and a bias of -inf over whole blocks
    (a masked vocabulary prefix: the running max starts at -inf)."""
    linear_nll_module = importlib.import_module("fastunlearn.ops.triton_kernels.linear_nll")
    if budget is not None:
        monkeypatch.setattr(linear_nll_module, "BLOCK_BUDGET", budget)
    vocab, hidden, masked = 16384 + 77, 8, 8000
    x = torch.randn(5, hidden, device=device).to(dtype)
    weight = (torch.randn(vocab, hidden, device=device) * 2).to(dtype)
    bias = torch.randn(vocab, device=device)
    bias[:masked] = float("-inf")
    bias = bias.to(dtype)
    labels = torch.tensor([8003, -1, vocab - 1, masked, 12000], device=device)
    coef = torch.rand(5, device=device)
    got = linear_nll_module.linear_nll_fused(x, weight, bias, labels, coef, 2, (True, True, True))
    if dtype == torch.float32:
        expected = torch_kernels.linear_nll_fused(
            x, weight, bias, labels, coef, 2, (True, True, True)
        )
    else:
        expected = rounded_like_the_kernel(x, weight, bias, labels, coef, chunk=2)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for name, actual, wanted in zip(
        ("nll", "grad_x", "grad_w", "grad_b"), got, expected, strict=True
    ):
        assert actual.isfinite().all(), name
        close(actual, wanted, tol=tol)


def test_linear_nll_all_rows_ignored(device):
    x = torch.randn(3, 8, device=device)
    weight = torch.randn(101, 8, device=device)
    labels = torch.full((3,), -1, device=device)
    kernels = triton_kernels()
    got = kernels.linear_nll_fused(
        x, weight, None, labels, torch.zeros(3, device=device), 2, (True, True, False)
    )
    for tensor in got[:3]:
        assert tensor.abs().max().item() == 0
