"""The opt-in linear + NLL kernels with the softmax in matmul epilogues
(``triton_kernels/linear_nll_epilogue.py``): two-pass ("epilogue") and single-pass
("epilogue-single"), compared with the torch kernel (fp32) or with fp32 math rounded where the
kernel rounds by design (bf16, fp16), on shapes that span several tiles in every dimension."""

import importlib
import importlib.util

import pytest
import torch

from fastunlearn.ops import linear_nll, reference_linear_nll, torch_kernels

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="triton not installed"
)

KERNELS = ["epilogue", "epilogue-single"]
NEEDS_ALL = (True, True, True)


@pytest.fixture
def device(monkeypatch):
    if torch.cuda.is_available():
        return torch.device("cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    return torch.device("cpu")


@pytest.fixture
def epilogue(device, monkeypatch):
    """The module, with vocabulary blocks of 100 columns in pass 2 (333 = 3 x 100 + 33)."""
    module = importlib.import_module("fastunlearn.ops.triton_kernels.linear_nll_epilogue")
    monkeypatch.setattr(module, "MIN_VOCAB_BLOCK", 64)
    monkeypatch.setattr(module, "BLOCK_BUDGET", 200)
    return module


def fused(module, kernel):
    return module.linear_nll_fused if kernel == "epilogue" else module.linear_nll_single_pass


def close(actual, expected, tol):
    # Relative to the largest magnitude: long dot products cancel, so the summation order
    # shows in the small entries.
    scale = expected.float().abs().nan_to_num(posinf=0.0).max().clamp_min(1.0)
    torch.testing.assert_close(
        (actual.float() / scale).cpu(), (expected.float() / scale).cpu(), rtol=tol, atol=tol
    )


def kernel_cast(values, dtype):
    """fp32 -> dtype as a Triton kernel's ``.to(dtype)`` does: round to nearest on a GPU; under
    the interpreter (CPU tensors) fp32 -> bf16 truncates the mantissa instead."""
    if values.device.type == "cpu" and dtype == torch.bfloat16:
        bits = values.float().contiguous().view(torch.int32) & -65536  # keep the top 16 bits
        return bits.view(torch.float32).to(dtype)  # exact: already a bf16 value
    return values.to(dtype)


def rounded_like_the_kernel(x, weight, bias, labels, coef, chunk, round_logits):
    """fp32 math on the (rounded) inputs, rounded where the kernel rounds by design (with
    ``kernel_cast`` where a Triton kernel rounds): dL/dlogits (written in x's dtype for the
    cuBLAS products), grad_x once (its fp32
    accumulator), grad_weight once per token chunk and, for the single-pass kernel
    (``round_logits``), the stored logits that the gradient is formed from. The NLL comes
    from fp32 logits in both kernels."""
    dtype, x32, w32 = x.dtype, x.float(), weight.float()
    vocab = len(weight)
    b32 = torch.zeros(vocab, device=x.device) if bias is None else bias.float()
    nll = torch.zeros(len(x), device=x.device)
    grad_x = torch.zeros(x.shape, device=x.device)
    grad_b = torch.zeros(vocab, device=x.device)
    grad_w = None
    for start in range(0, len(x), chunk):
        rows = slice(start, start + chunk)
        chunk_labels, valid = labels[rows], labels[rows] >= 0
        logits = torch.addmm(b32, x32[rows], w32.t())
        lse = logits.logsumexp(1)
        target = logits.gather(1, chunk_labels.clamp_min(0)[:, None])[:, 0]
        nll[rows] = torch.where(valid, lse - target, 0.0)
        if round_logits:
            logits = kernel_cast(logits, dtype).float()
        onehot = torch.nn.functional.one_hot(chunk_labels.clamp_min(0), vocab)
        grad = coef[rows, None] * ((logits - lse[:, None]).exp() - onehot)
        grad = kernel_cast(torch.where(valid[:, None], grad, 0.0), dtype).float()
        grad_x[rows] = grad @ w32
        part = grad.t() @ x32[rows]
        grad_w = part.to(dtype) if grad_w is None else (grad_w.float() + part).to(dtype)
        grad_b += grad.sum(0)
    return nll, grad_x.to(dtype), grad_w, None if bias is None else grad_b.to(dtype)


def random_problem(device, dtype, generator, n=5, hidden=24, vocab=333, masked=0, bias=True):
    """Logits of a few units, some ignored rows (-1), labels outside a -inf bias prefix."""
    x = torch.randn(n, hidden, generator=generator).to(device, dtype)
    weight = (torch.randn(vocab, hidden, generator=generator) * 0.5).to(device, dtype)
    b = None
    if bias:
        b = torch.randn(vocab, generator=generator)
        b[:masked] = float("-inf")
        b = b.to(device, dtype)
    labels = torch.randint(masked, vocab, (n,), generator=generator)
    labels[torch.rand(n, generator=generator) < 0.3] = -1
    coef = (torch.rand(n, generator=generator) - 0.5).to(device)  # both signs: ascent too
    return x, weight, b, labels.to(device), coef


TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 5e-3}


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"]
)
@pytest.mark.parametrize("bias", ["none", "masked-prefix"])
def test_matches_reference(epilogue, device, generator, kernel, dtype, bias):
    """N=5 in chunks of 2 (grad_weight summed over 3 chunks), H=24 (a partial K tile),
    V=333 (partial vocabulary tiles and blocks); the masked prefix of 70 spans whole tiles."""
    masked = 70 if bias == "masked-prefix" else 0
    problem = random_problem(device, dtype, generator, masked=masked, bias=bias != "none")
    got = fused(epilogue, kernel)(*problem, 2, NEEDS_ALL)
    if dtype == torch.float32:
        expected = torch_kernels.linear_nll_fused(*problem, 2, NEEDS_ALL)
    else:
        expected = rounded_like_the_kernel(*problem, 2, round_logits=kernel == "epilogue-single")
    names = ("nll", "grad_x", "grad_w", "grad_b")
    for name, actual, wanted in zip(names, got, expected, strict=True):
        if wanted is None:
            assert actual is None, name
            continue
        assert actual.dtype == (torch.float32 if name == "nll" else dtype), name
        assert actual.isfinite().all(), name
        # The NLL is fp32 arithmetic on the same inputs in both: only the summation order differs.
        close(actual, wanted, tol=1e-5 if name == "nll" else TOL[dtype])


def test_single_pass_workspace_caps_the_chunk(epilogue, device, generator, monkeypatch):
    """A workspace of 3 rows of logits splits chunk_size=5 into chunks of 3 and 2."""
    x, weight, bias, labels, coef = random_problem(device, torch.float32, generator, n=5)
    monkeypatch.setattr(epilogue, "SINGLE_PASS_WORKSPACE_BYTES", 3 * 333 * 4)
    assert epilogue.single_pass_chunk_size(5, 333, 4) == 3
    got = epilogue.linear_nll_single_pass(x, weight, bias, labels, coef, 5, NEEDS_ALL)
    expected = torch_kernels.linear_nll_fused(x, weight, bias, labels, coef, 5, NEEDS_ALL)
    for actual, wanted in zip(got, expected, strict=True):
        close(actual, wanted, tol=1e-5)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(
    "needs_grad",
    [(False, False, False), (True, False, False), (False, True, True)],
    ids=["nll-only", "x-only", "weight-bias"],
)
def test_requested_gradients_only(epilogue, device, generator, kernel, needs_grad):
    problem = random_problem(device, torch.float32, generator, n=3, vocab=100)
    got = fused(epilogue, kernel)(*problem, 2, needs_grad)
    expected = torch_kernels.linear_nll_fused(*problem, 2, needs_grad)
    close(got[0], expected[0], tol=1e-5)
    for actual, wanted in zip(got[1:], expected[1:], strict=True):
        assert (actual is None) == (wanted is None)
        if wanted is not None:
            close(actual, wanted, tol=1e-5)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_all_rows_ignored_is_zero(epilogue, device, generator, kernel, dtype):
    x, weight, bias, _, _ = random_problem(device, dtype, generator, n=3, vocab=101, masked=40)
    labels = torch.full((3,), -1, device=device)
    coef = torch.ones(3, device=device)  # ignored rows get no gradient whatever their coef
    got = fused(epilogue, kernel)(x, weight, bias, labels, coef, 2, NEEDS_ALL)
    for tensor in got:
        assert tensor.isfinite().all()
        assert tensor.abs().max().item() == 0


@pytest.mark.parametrize("kernel", KERNELS)
def test_no_tokens_gives_zeros(epilogue, device, kernel):
    x = torch.empty(0, 8, device=device)
    weight = torch.randn(50, 8, device=device)
    bias = torch.randn(50, device=device)
    labels = torch.empty(0, dtype=torch.long, device=device)
    coef = torch.empty(0, device=device)
    nll, grad_x, grad_w, grad_b = fused(epilogue, kernel)(
        x, weight, bias, labels, coef, 2, NEEDS_ALL
    )
    assert nll.shape == (0,) and grad_x.shape == (0, 8)
    assert grad_w.shape == weight.shape and grad_b.shape == bias.shape
    assert grad_w.abs().max().item() == 0 and grad_b.abs().max().item() == 0


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_public_op_with_the_switch(epilogue, device, generator, monkeypatch, kernel, reduction):
    """linear_nll(backend="triton") with FASTUNLEARN_LINEAR_NLL_KERNEL's module flag set:
    forward and backward (computed in forward for "mean", recomputed for "none") against the
    autograd of the materialised reference, with token weights and gradient ascent."""
    dispatch = importlib.import_module("fastunlearn.ops.triton_kernels.linear_nll")
    monkeypatch.setattr(dispatch, "KERNEL", kernel)
    calls = []
    original = fused(epilogue, kernel)
    monkeypatch.setattr(
        epilogue,
        original.__name__,
        lambda *args: calls.append(1) or original(*args),
    )
    n, hidden, vocab = 6, 24, 150
    x = torch.randn(2, n // 2, hidden, generator=generator).to(device)
    weight = (torch.randn(vocab, hidden, generator=generator) * 0.5).to(device)
    bias = torch.randn(vocab, generator=generator).to(device)
    labels = torch.randint(0, vocab, (2, n // 2), generator=generator)
    labels[0, 0] = -100
    labels = labels.to(device)
    token_weight = torch.rand(2, n // 2, generator=generator).to(device)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    kwargs = dict(token_weight=token_weight, scale=-1.0, reduction=reduction)
    loss = linear_nll(*leaves[:2], labels, bias=leaves[2], chunk_size=4, backend="triton", **kwargs)
    ref_leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    ref = reference_linear_nll(*ref_leaves[:2], labels, bias=ref_leaves[2], **kwargs)
    assert calls, "the opt-in kernel did not run"
    close(loss.detach(), ref.detach(), tol=1e-5)
    grad_out = torch.randn(loss.shape, generator=generator).to(device)
    loss.backward(grad_out)
    ref.backward(grad_out)
    for got, wanted in zip(leaves, ref_leaves, strict=True):
        close(got.grad, wanted.grad, tol=1e-5)
