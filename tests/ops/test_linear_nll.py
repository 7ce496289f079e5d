import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from fastunlearn.ops import linear_nll, reference_linear_nll
from tests.ops.utils import assert_close

# (N, H, V, chunk_size): V not a multiple of the chunk, one-token inputs, chunk of one row.
CASES = [(1, 7, 5, None), (13, 16, 37, 4), (24, 33, 101, 7), (40, 24, 64, 1)]


def make_inputs(
    n, hidden, vocab, dtype, generator, ignore_fraction=0.25, with_bias=True, with_weights=True
):
    x = torch.randn(n, hidden, generator=generator).to(dtype)
    weight = (torch.randn(vocab, hidden, generator=generator) / hidden**0.5).to(dtype)
    bias = torch.randn(vocab, generator=generator).to(dtype) if with_bias else None
    labels = torch.randint(0, vocab, (n,), generator=generator)
    labels[torch.rand(n, generator=generator) < ignore_fraction] = -100
    labels[: max(1, n // 4)] = -100  # a run of ignored tokens fills whole chunks
    if n == 1:
        labels[0] = 3
    token_weight = torch.rand(n, generator=generator).to(dtype) if with_weights else None
    return x, weight, bias, labels, token_weight


def run_both(device, backend, inputs, scale, reduction, chunk_size, generator):
    x, weight, bias, labels, token_weight = inputs
    leaves = [
        t.to(device).requires_grad_() for t in (x, weight) + ((bias,) if bias is not None else ())
    ]
    fused_bias = leaves[2] if bias is not None else None
    tw = None if token_weight is None else token_weight.to(device)
    loss, logprobs = linear_nll(
        leaves[0],
        leaves[1],
        labels.to(device),
        fused_bias,
        tw,
        scale,
        reduction=reduction,
        chunk_size=chunk_size,
        return_token_logprobs=True,
        backend=backend,
    )
    grad_out = torch.randn(loss.shape, generator=generator)
    loss.backward(grad_out.to(device))

    ref_leaves = [
        t.detach().float().requires_grad_()
        for t in (x, weight) + ((bias,) if bias is not None else ())
    ]
    ref_bias = ref_leaves[2] if bias is not None else None
    ref_tw = None if token_weight is None else token_weight.float()
    expected = reference_linear_nll(
        ref_leaves[0], ref_leaves[1], labels, ref_bias, ref_tw, scale, reduction=reduction
    )
    expected.backward(grad_out)
    return (loss, logprobs, [t.grad for t in leaves]), (expected, [t.grad for t in ref_leaves])


def test_reference_gradcheck():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(5, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(9, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(9, dtype=torch.float64, generator=generator, requires_grad=True)
    labels = torch.tensor([1, -100, 8, 0, 3])
    token_weight = torch.rand(5, dtype=torch.float64, generator=generator, requires_grad=True)
    for reduction in ("mean", "sum", "none"):
        assert torch.autograd.gradcheck(
            lambda a, w, b, tw, reduction=reduction: reference_linear_nll(
                a, w, labels, b, tw, -0.5, reduction=reduction
            ),
            (x, weight, bias, token_weight),
        )


def test_reference_equals_cross_entropy():
    generator = torch.Generator().manual_seed(3)
    x, weight, bias, labels, _ = make_inputs(
        11, 8, 19, torch.float32, generator, with_weights=False
    )
    expected = F.cross_entropy(F.linear(x, weight, bias), labels, ignore_index=-100)
    torch.testing.assert_close(reference_linear_nll(x, weight, labels, bias), expected)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}-H{}-V{}-chunk{}".format(*c))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("scale", [1.0, -1.0, 0.37])
def test_matches_reference(device_backend, dtype, generator, case, reduction, scale):
    device, backend = device_backend
    n, hidden, vocab, chunk_size = case
    with_bias = n % 2 == 1  # half the cases have a bias (OPT's head has none)
    inputs = make_inputs(
        n, hidden, vocab, dtype, generator, with_bias=with_bias, with_weights=scale != 1.0
    )
    (loss, logprobs, grads), (expected, expected_grads) = run_both(
        device, backend, inputs, scale, reduction, chunk_size, generator
    )
    labels = inputs[3]
    assert loss.dtype == torch.float32 and loss.shape == expected.shape
    # the loss sums over tokens: compare on the scale of one token's NLL
    tokens = 1 if reduction != "sum" else max(1, int((labels != -100).sum()))
    assert_close(loss / tokens, expected / tokens, dtype)
    counted = labels != -100
    ref_logprobs = torch.log_softmax(
        F.linear(
            *[t.float() for t in inputs[:2]], None if inputs[2] is None else inputs[2].float()
        ),
        -1,
    )
    expected_logprobs = torch.where(
        counted, ref_logprobs.gather(1, labels.clamp_min(0)[:, None]).squeeze(1), 0.0
    )
    assert_close(logprobs, expected_logprobs, dtype)
    for name, grad, expected_grad in zip(
        ("x", "weight", "bias"), grads, expected_grads, strict=False
    ):
        assert grad.dtype == dtype, name
        # weight and bias gradients sum one term per token ("sum": each up to a whole
        # token's), so their rounding grows with the token count: compare per token, as the
        # loss (a bf16 sum over 40 tokens once missed 0.02 by one element, 0.078 off).
        per_token = tokens if name in ("weight", "bias") else 1
        assert_close(grad / per_token, expected_grad / per_token, dtype)


@pytest.fixture
def poisoned_empty(monkeypatch):
    """torch.empty / torch.empty_like fill floating tensors with NaN, so a result that is never
    written shows up as NaN instead of whatever the allocator happened to hand back."""
    empty, empty_like = torch.empty, torch.empty_like

    def poison(tensor):
        return tensor.fill_(float("nan")) if tensor.is_floating_point() else tensor

    monkeypatch.setattr(torch, "empty", lambda *a, **k: poison(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: poison(empty_like(*a, **k)))


# labels shapes where no token is counted: no token at all ([0] and [2, 0]), all ignored.
NOTHING_COUNTED = {"no-token": (0,), "no-token-batched": (2, 0), "all-ignored": (2, 5)}


@pytest.mark.parametrize("shape", NOTHING_COUNTED.values(), ids=NOTHING_COUNTED.keys())
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("with_weights", [False, True], ids=["unweighted", "weighted"])
def test_nothing_counted_gives_zero_loss_and_gradients(
    device_backend, dtype, generator, poisoned_empty, shape, reduction, with_bias, with_weights
):
    device, backend = device_backend
    hidden, vocab = 8, 11
    leaves = [
        torch.randn(*shape, hidden, generator=generator),
        torch.randn(vocab, hidden, generator=generator),
    ] + ([torch.randn(vocab, generator=generator)] if with_bias else [])
    leaves = [t.to(device, dtype).requires_grad_() for t in leaves]
    token_weight = (
        torch.rand(shape, generator=generator).to(device, dtype) if with_weights else None
    )
    loss, logprobs = linear_nll(
        leaves[0],
        leaves[1],
        torch.full(shape, -100, device=device),
        leaves[2] if with_bias else None,
        token_weight,
        scale=-0.7,
        reduction=reduction,
        chunk_size=4 if len(shape) > 1 else None,
        return_token_logprobs=True,
        backend=backend,
    )
    assert loss.dtype == torch.float32 and loss.shape == (shape if reduction == "none" else ())
    assert torch.all(loss == 0)  # == 0 is False for NaN
    assert logprobs.shape == shape and torch.all(logprobs == 0)
    loss.backward(torch.randn(loss.shape, generator=generator).to(device))
    for leaf in leaves:
        assert leaf.grad.shape == leaf.shape and leaf.grad.dtype == dtype
        assert torch.all(leaf.grad == 0)


# (N, H, V, chunk_size, ignored): mixed, every token ignored, no token at all
TOKEN_WEIGHT_CASES = [
    (19, 12, 29, 5, "mixed"),
    (6, 8, 11, 4, "all-ignored"),
    (0, 8, 11, None, "none"),
]


@pytest.mark.parametrize("case", TOKEN_WEIGHT_CASES, ids=lambda c: f"N{c[0]}-{c[4]}")
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("only_token_weight", [False, True], ids=["all-leaves", "only-weights"])
def test_token_weight_gradient_matches_reference(
    device_backend, dtype, generator, case, reduction, only_token_weight
):
    device, backend = device_backend
    n, hidden, vocab, chunk_size, ignored = case
    x, weight, bias, labels, token_weight = make_inputs(n, hidden, vocab, dtype, generator)
    if ignored == "all-ignored":
        labels[:] = -100
    scale = -0.6
    leaves = [t.to(device).requires_grad_(not only_token_weight) for t in (x, weight, bias)]
    tw = token_weight.to(device).requires_grad_()
    loss = linear_nll(
        *leaves[:2],
        labels.to(device),
        leaves[2],
        tw,
        scale,
        reduction=reduction,
        chunk_size=chunk_size,
        backend=backend,
    )
    grad_out = torch.randn(loss.shape, generator=generator)
    loss.backward(grad_out.to(device))

    ref_tw = token_weight.detach().float().requires_grad_()
    x, weight, bias = (t.detach().float() for t in (x, weight, bias))
    expected = reference_linear_nll(x, weight, labels, bias, ref_tw, scale, reduction=reduction)
    expected.backward(grad_out)
    assert tw.grad is not None and tw.grad.dtype == dtype and tw.grad.shape == tw.shape
    assert_close(tw.grad, ref_tw.grad, dtype)
    if ignored != "mixed":
        assert torch.all(tw.grad == 0)
    if not only_token_weight:  # the other gradients are unaffected
        for leaf in leaves:
            assert leaf.grad is not None and torch.isfinite(leaf.grad).all()


def test_token_weight_gradient_is_the_derived_formula():
    """d mean / d w_s = counted_s * (scale * nll_s - loss) / sum_t counted_t * w_t."""
    generator = torch.Generator().manual_seed(5)
    x, weight, bias, labels, token_weight = make_inputs(9, 6, 13, torch.float32, generator)
    token_weight.requires_grad_()
    loss, logprobs = linear_nll(
        x, weight, labels, bias, token_weight, 0.8, return_token_logprobs=True, backend="torch"
    )
    loss.backward()
    counted = (labels != -100).float()
    expected = counted * (0.8 * -logprobs - loss.detach()) / (counted * token_weight).sum()
    torch.testing.assert_close(token_weight.grad, expected.detach())


def test_ascent_gradients_are_exactly_negated(device_backend, dtype, generator):
    device, backend = device_backend
    x, weight, bias, labels, token_weight = make_inputs(19, 12, 29, dtype, generator)
    grads = {}
    for scale in (1.0, -1.0):
        leaves = [t.to(device).requires_grad_() for t in (x, weight, bias)]
        loss = linear_nll(
            leaves[0],
            leaves[1],
            labels.to(device),
            leaves[2],
            token_weight.to(device),
            scale,
            chunk_size=5,
            backend=backend,
        )
        loss.backward()
        grads[scale] = (loss.detach(), *[t.grad for t in leaves])
    for positive, negative in zip(grads[1.0], grads[-1.0], strict=True):
        assert torch.equal(positive, -negative)


def test_batched_input_and_tied_embedding(device_backend, generator):
    """[B, T, H] input; the head shares its weight with the input embedding (OPT)."""
    device, backend = device_backend
    embedding = torch.nn.Embedding(23, 10).to(device)
    tokens = torch.randint(0, 23, (3, 7), generator=generator).to(device)
    labels = torch.roll(tokens, -1, dims=1)
    labels[:, -1] = -100

    hidden = torch.tanh(embedding(tokens))
    linear_nll(hidden, embedding.weight, labels, chunk_size=5, backend=backend).backward()
    fused_grad = embedding.weight.grad.clone()

    embedding.weight.grad = None
    hidden = torch.tanh(embedding(tokens))
    F.cross_entropy(
        (hidden @ embedding.weight.t()).flatten(0, 1), labels.flatten(), ignore_index=-100
    ).backward()
    torch.testing.assert_close(fused_grad, embedding.weight.grad, rtol=1e-5, atol=1e-6)


class LargestStorageSeen(TorchDispatchMode):
    """Records the byte size of the largest storage behind any tensor an op returns.

    Bytes of storage, not elements: Triton's interpreter passes arguments as uint8 views.
    """

    def __init__(self):
        super().__init__()
        self.largest_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(value, torch.Tensor):
                self.largest_bytes = max(self.largest_bytes, value.untyped_storage().nbytes())
        return out


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_never_materialises_full_logits(device_backend, reduction):
    device, backend = device_backend
    if backend == "cpp":
        pytest.skip(
            "allocations inside the C++ op are invisible to the dispatcher; "
            "its peak memory is measured in benchmarks/"
        )
    n, hidden, vocab, chunk = 64, 8, 97, 4
    x = torch.randn(n, hidden, device=device, requires_grad=True)
    weight = torch.randn(vocab, hidden, device=device, requires_grad=True)
    labels = torch.randint(0, vocab, (n,), device=device)
    with LargestStorageSeen() as tracker:
        loss = linear_nll(x, weight, labels, reduction=reduction, chunk_size=chunk, backend=backend)
        loss.sum().backward()
    # the largest fp32 buffers are the [V, H] weight gradient and one [chunk, V] logits block
    assert tracker.largest_bytes <= 4 * max(vocab * hidden, chunk * vocab) < 4 * n * vocab


def test_mean_weights_normalise_over_counted_tokens(device_backend):
    device, backend = device_backend
    x = torch.randn(4, 6, device=device)
    weight = torch.randn(9, 6, device=device)
    labels = torch.tensor([1, 2, -100, 4], device=device)
    token_weight = torch.tensor([1.0, 3.0, 100.0, 0.0], device=device)
    per_token = linear_nll(x, weight, labels, reduction="none", backend=backend)
    loss = linear_nll(x, weight, labels, token_weight=token_weight, backend=backend)
    torch.testing.assert_close(loss, (per_token[0] + 3 * per_token[1]) / 4.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(x=torch.randn(4, 5)), "x must end in the hidden size"),
        (dict(labels=torch.zeros(3, dtype=torch.long)), "labels must have shape"),
        (dict(labels=torch.tensor([0, 1, 7, 2])), r"labels must lie in \[0, 7\)"),
        (dict(labels=torch.tensor([0, -1, 2, 2])), r"found -1"),
        (dict(labels=torch.zeros(4)), "labels must be an integer tensor"),
        (dict(x=torch.randint(0, 2, (4, 6))), "x must be a floating tensor"),
        (dict(x=torch.randn(4, 6, dtype=torch.bfloat16)), "x dtype"),
        (dict(bias=torch.randn(6)), "bias must have shape"),
        (dict(token_weight=torch.rand(5)), "token_weight must have shape"),
        (dict(reduction="avg"), "reduction must be one of"),
        (dict(chunk_size=0), "chunk_size must be a positive integer"),
        (dict(weight=torch.randn(7, 6, device="meta")), "must share one device"),
        (dict(scale=float("nan")), "scale must be a finite number.*, got nan"),
        (dict(scale=float("inf")), "scale must be a finite number.*, got inf"),
        (dict(scale=-float("inf")), "scale must be a finite number.*, got -inf"),
        (dict(scale=True), "scale must be a finite number.*, got True"),
        (dict(scale=False), "scale must be a finite number.*, got False"),
        (dict(scale=torch.tensor(0.5)), "scale must be a finite number.*, got a Tensor"),
        (dict(scale="1.0"), "scale must be a finite number.*, got '1.0'"),
        (dict(scale=1e39), "scale must fit in fp32.*, got 1e\\+39"),
        (dict(ignore_index=True), "ignore_index must be an integer, got True"),
        (dict(ignore_index=-100.0), "ignore_index must be an integer, got -100.0"),
        (dict(ignore_index=torch.tensor(-100)), "ignore_index must be an integer, got a Tensor"),
        (dict(chunk_size=True), "chunk_size must be a positive integer, got True"),
        (dict(chunk_size=2.5), "chunk_size must be a positive integer, got 2.5"),
    ],
)
def test_bad_input_names_the_argument(kwargs, message):
    arguments = dict(
        x=torch.randn(4, 6), weight=torch.randn(7, 6), labels=torch.tensor([0, 1, 2, -100])
    )
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message) as error:
        linear_nll(**arguments)
    assert "\n" not in str(error.value)


def test_scale_accepts_ints_and_numpy_numbers(generator):
    np = pytest.importorskip("numpy")
    x, weight, bias, labels, _ = make_inputs(7, 6, 13, torch.float32, generator)
    expected = linear_nll(x, weight, labels, bias, scale=2.0, chunk_size=3, backend="torch")
    for scale in (2, np.float32(2.0), np.int64(2)):
        loss = linear_nll(x, weight, labels, bias, scale=scale, chunk_size=3, backend="torch")
        torch.testing.assert_close(loss, expected)


@pytest.mark.cuda
def test_no_host_synchronisation_on_cuda():
    x = torch.randn(256, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    weight = torch.randn(1000, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, 1000, (256,), device="cuda")
    linear_nll(x, weight, labels, scale=-1.0, chunk_size=64)  # warm-up: first-use imports
    torch.cuda.set_sync_debug_mode("error")
    try:
        linear_nll(x, weight, labels, scale=-1.0, chunk_size=64).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_second_backward_is_refused_with_a_reason(device_backend):
    device, backend = device_backend
    x = torch.randn(6, 8, device=device, requires_grad=True)
    weight = torch.randn(11, 8, device=device, requires_grad=True)
    loss = linear_nll(x, weight, torch.randint(0, 11, (6,), device=device), backend=backend)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="compute the loss again"):
        loss.backward()


def test_follows_autocast_like_f_linear(device_backend, generator):
    """bf16 hidden states against an fp32 head under autocast (OPT under mixed precision):
    both run in bf16, as F.linear would, and the fp32 head gets its gradient in fp32."""
    device, backend = device_backend
    x, weight, bias, labels, _ = make_inputs(
        21, 16, 37, torch.float32, generator, with_weights=False
    )
    x16 = x.to(device, torch.bfloat16).requires_grad_()
    leaves = [t.to(device).requires_grad_() for t in (weight, bias)]
    with torch.autocast(device.type, dtype=torch.bfloat16):
        loss = linear_nll(
            x16, *leaves[:1], labels.to(device), leaves[1], chunk_size=8, backend=backend
        )
    loss.backward()

    ref = [t.detach().to(torch.bfloat16).float().requires_grad_() for t in (x16, *leaves)]
    expected = reference_linear_nll(ref[0], ref[1], labels.to(device), ref[2])
    expected.backward()
    assert leaves[0].grad.dtype == torch.float32
    for actual, wanted in zip(
        (loss, x16.grad, *(t.grad for t in leaves)), (expected, *(t.grad for t in ref)), strict=True
    ):
        assert_close(actual.float().cpu(), wanted, torch.bfloat16)
