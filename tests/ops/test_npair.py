import pytest
import torch

from fastunlearn.ops import npair_loss, reference_npair_loss
from tests.ops.utils import assert_close

SHAPES = [(1, 2, 7), (3, 2, 16), (4, 5, 33), (5, 9, 64)]  # (B, K, D)


def random_candidate_mask(batch, k, generator):
    """Rows with different numbers of negatives, one row with a single negative."""
    mask = torch.rand(batch, k, generator=generator) < 0.7
    mask[:, 0] = True
    mask[0, 1] = True
    mask[0, 2:] = False
    mask[:, 1] |= mask[:, 1:].sum(1) == 0  # at least one negative per row
    return mask


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_reference_gradcheck(similarity):
    generator = torch.Generator().manual_seed(1)
    anchor = torch.randn(3, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    cand = torch.randn(3, 4, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    mask = random_candidate_mask(3, 4, generator)
    assert torch.autograd.gradcheck(
        lambda a, c: reference_npair_loss(a, c, 0.7, similarity, mask)[0], (anchor, cand)
    )


def test_reference_is_the_npair_formula():
    anchor = torch.tensor([[1.0, 0.0]])
    cand = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])
    loss, _ = reference_npair_loss(anchor, cand, 0.5, "cosine")
    # cosines 1, 0, -1 over tau=0.5 -> logits 2, 0, -2
    expected = torch.log1p(torch.exp(torch.tensor(-2.0)) + torch.exp(torch.tensor(-4.0)))
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("masked", [False, True], ids=["all-candidates", "mixed-candidates"])
def test_matches_reference(device_backend, dtype, generator, shape, similarity, reduction, masked):
    device, backend = device_backend
    batch, k, dim = shape
    temperature = float(torch.empty(()).uniform_(0.05, 2.0, generator=generator))
    mask = random_candidate_mask(batch, k, generator) if masked else None
    anchor = torch.randn(batch, dim, generator=generator).to(dtype)
    cand = torch.randn(batch, k, dim, generator=generator).to(dtype)
    if similarity == "dot":  # keep dot logits in a range where bf16 inputs stay comparable
        anchor, cand = anchor / dim**0.5, cand / dim**0.5
    a = anchor.to(device).requires_grad_()
    c = cand.to(device).requires_grad_()
    loss, logits = npair_loss(
        a,
        c,
        temperature,
        similarity,
        None if mask is None else mask.to(device),
        reduction,
        return_logits=True,
        backend=backend,
    )
    grad_out = torch.randn(loss.shape, generator=generator)
    loss.backward(grad_out.to(device))

    ref_a = anchor.detach().float().requires_grad_()
    ref_c = cand.detach().float().requires_grad_()
    expected, expected_logits = reference_npair_loss(
        ref_a, ref_c, temperature, similarity, mask, reduction
    )
    expected.backward(grad_out)
    assert loss.dtype == torch.float32 and not logits.requires_grad
    # logits are divided by tau: compare on the scale of a similarity
    assert_close(loss * temperature, expected * temperature, dtype)
    finite = torch.isfinite(expected_logits)
    assert torch.equal(torch.isfinite(logits).cpu(), finite)
    assert_close(logits.cpu()[finite] * temperature, expected_logits[finite] * temperature, dtype)
    assert_close(a.grad * temperature, ref_a.grad * temperature, dtype)
    assert_close(c.grad * temperature, ref_c.grad * temperature, dtype)
    if mask is not None:
        assert torch.all(c.grad.cpu()[~mask] == 0)


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "mask"])
def test_empty_batch_gives_zero_loss_and_empty_gradients(
    device_backend, dtype, similarity, reduction, masked
):
    """B = 0, like linear_nll with no counted token: the mean over no rows is 0, not NaN."""
    device, backend = device_backend
    anchor = torch.empty(0, 6, device=device, dtype=dtype, requires_grad=True)
    cand = torch.empty(0, 3, 6, device=device, dtype=dtype, requires_grad=True)
    mask = torch.ones(0, 3, dtype=torch.bool, device=device) if masked else None
    loss, logits = npair_loss(
        anchor, cand, 0.5, similarity, mask, reduction, return_logits=True, backend=backend
    )
    expected, _ = reference_npair_loss(
        anchor.float(), cand.float(), 0.5, similarity, mask, reduction
    )
    assert loss.dtype == torch.float32 and loss.shape == expected.shape
    assert loss.shape == ((0,) if reduction == "none" else ())
    assert torch.all(loss == 0) and torch.all(expected == 0)  # == 0 is False for NaN
    assert logits.shape == (0, 3) and logits.dtype == torch.float32
    loss.backward(torch.ones(loss.shape, device=device))
    assert anchor.grad.shape == anchor.shape and anchor.grad.dtype == dtype
    assert cand.grad.shape == cand.shape and cand.grad.dtype == dtype


def test_zero_vector_under_cosine_has_finite_gradient(device_backend):
    device, backend = device_backend
    anchor = torch.zeros(2, 8, device=device)
    anchor[1] = torch.randn(8)
    anchor.requires_grad_()
    cand = torch.randn(2, 3, 8, device=device, requires_grad=True)
    npair_loss(anchor, cand, 0.5, backend=backend).backward()
    assert torch.isfinite(anchor.grad).all() and torch.isfinite(cand.grad).all()


def test_return_logits_supports_accuracy(device_backend):
    device, backend = device_backend
    anchor = torch.randn(6, 12, device=device)
    cand = torch.randn(6, 4, 12, device=device)
    cand[:, 0] = anchor  # the positive is the anchor itself: always the top logit
    _, logits = npair_loss(anchor, cand, 0.1, return_logits=True, backend=backend)
    assert torch.all(logits.argmax(dim=1) == 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(cand=torch.randn(2, 1, 4)), "K >= 2"),
        (dict(cand=torch.randn(3, 3, 4)), "cand must have shape"),
        (dict(cand=torch.randn(2, 3, 5)), "cand must have shape"),
        (dict(temperature=0.0), "temperature must be a positive finite number, got 0.0"),
        (dict(temperature=-1.0), "temperature must be a positive finite number, got -1.0"),
        (dict(temperature=float("nan")), "temperature must be a positive finite .*, got nan"),
        (dict(temperature=float("inf")), "temperature must be a positive finite .*, got inf"),
        (dict(temperature=True), "temperature must be a positive finite .*, got True"),
        (dict(temperature=False), "temperature must be a positive finite .*, got False"),
        (dict(temperature=torch.tensor(0.5)), "temperature must be a positive .*, got a Tensor"),
        (dict(temperature="0.5"), "temperature must be a positive finite .*, got '0.5'"),
        (dict(temperature=1e-39), "1/temperature must fit in fp32.*, got 1e-39"),
        (dict(similarity="euclid"), "similarity must be one of"),
        (dict(reduction="max"), "reduction must be one of"),
        (dict(cand_mask=torch.ones(2, 2, dtype=torch.bool)), "cand_mask must have shape"),
        (
            dict(cand_mask=torch.tensor([[False, True, True], [True, True, True]])),
            r"cand_mask\[:, 0\] must be True",
        ),
        (dict(anchor=torch.randint(0, 3, (2, 4))), "anchor must be a floating tensor"),
        (dict(cand=torch.randn(2, 3, 4, dtype=torch.float16)), "cand dtype"),
        (dict(cand=torch.randn(2, 3, 4, device="meta")), "must share one device"),
    ],
)
def test_bad_input_names_the_argument(kwargs, message):
    arguments = dict(anchor=torch.randn(2, 4), cand=torch.randn(2, 3, 4), temperature=0.5)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message) as error:
        npair_loss(**arguments)
    assert "\n" not in str(error.value)


def test_temperature_accepts_ints_and_numpy_numbers(generator):
    np = pytest.importorskip("numpy")
    anchor = torch.randn(3, 5, generator=generator)
    cand = torch.randn(3, 4, 5, generator=generator)
    expected = npair_loss(anchor, cand, 2.0, backend="torch")
    for temperature in (2, np.float32(2.0), np.int64(2)):
        torch.testing.assert_close(npair_loss(anchor, cand, temperature, backend="torch"), expected)


def test_left_out_positive_is_refused_on_cpu_and_kept_elsewhere(device_backend, generator):
    """Column 0 is checked where that costs no host read (CPU tensors, as linear_nll's label
    range); on a device the op keeps column 0 whatever the mask says, so the loss and its
    gradients are those of the mask with column 0 set, finite, and nothing synchronises."""
    device, backend = device_backend
    anchor = torch.randn(3, 8, generator=generator).to(device).requires_grad_()
    cand = torch.randn(3, 4, 8, generator=generator).to(device).requires_grad_()
    mask = torch.tensor([[False, True, True, False], [True, True, False, True], [False] * 4])
    if device.type == "cpu":
        with pytest.raises(ValueError, match=r"cand_mask\[:, 0\] must be True"):
            npair_loss(anchor, cand, 0.5, cand_mask=mask.to(device), backend=backend)
        return
    loss, logits = npair_loss(
        anchor, cand, 0.5, cand_mask=mask.to(device), return_logits=True, backend=backend
    )
    grads = torch.autograd.grad(loss, (anchor, cand))
    kept = mask.clone()
    kept[:, 0] = True
    expected, expected_logits = npair_loss(
        anchor, cand, 0.5, cand_mask=kept.to(device), return_logits=True, backend=backend
    )
    expected_grads = torch.autograd.grad(expected, (anchor, cand))
    assert torch.isfinite(loss) and torch.isfinite(logits[:, 0]).all()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(logits, expected_logits)
    for got, wanted in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, wanted)


# ---------------------------------------------------------------------------------------------
# Triton: one launch forward (rows reduced in it), one backward (the incoming gradient read by
# the kernel); column 0 kept by the kernel.


def _triton_device(monkeypatch):
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        return torch.device("cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    return torch.device("cpu")


def test_triton_kernel_keeps_a_left_out_positive(monkeypatch, generator):
    device = _triton_device(monkeypatch)
    from fastunlearn.ops.triton_kernels import npair as triton_npair

    anchor = torch.randn(3, 8, generator=generator).to(device)
    cand = torch.randn(3, 4, 8, generator=generator).to(device)
    mask = torch.tensor([[False, True, True, False], [True, True, False, True], [False] * 4])
    kept = mask.clone()
    kept[:, 0] = True
    for reduction in ("mean", "none"):
        got = triton_npair.npair_forward_reduced(
            anchor, cand, mask.to(device), 2.0, True, 1e-8, reduction
        )
        wanted = triton_npair.npair_forward_reduced(
            anchor, cand, kept.to(device), 2.0, True, 1e-8, reduction
        )
        for actual, expected in zip(got, wanted, strict=True):
            assert torch.equal(actual, expected)
    loss, logits = got
    assert torch.isfinite(loss).all() and torch.isfinite(logits[:, 0]).all()
    assert torch.isinf(logits[~kept.to(device)]).all()


@pytest.mark.parametrize("mask_dtype", [torch.int64, torch.float32, torch.uint8])
def test_triton_mask_of_any_dtype(monkeypatch, generator, mask_dtype):
    device = _triton_device(monkeypatch)
    anchor = torch.randn(4, 16, generator=generator).to(device)
    cand = torch.randn(4, 5, 16, generator=generator).to(device)
    mask = random_candidate_mask(4, 5, generator)
    expected = npair_loss(anchor, cand, 0.3, cand_mask=mask.to(device), backend="triton")
    got = npair_loss(anchor, cand, 0.3, cand_mask=mask.to(device, mask_dtype), backend="triton")
    assert torch.equal(got, expected)


def test_triton_reduction_in_launch_many_rows_and_repeated(monkeypatch, generator):
    """More rows than one block of the final sum (3 blocks of 16 here, of 1024 by default),
    and repeated launches: each leaves its arrival counter at 0 for the next, so every call
    gives the same, reference, loss."""
    device = _triton_device(monkeypatch)
    from fastunlearn.ops.triton_kernels import npair as triton_npair

    monkeypatch.setattr(triton_npair, "_SUM_BLOCK", 16)
    anchor = torch.randn(40, 4, generator=generator)
    cand = torch.randn(40, 2, 4, generator=generator)
    a, c = anchor.to(device).requires_grad_(), cand.to(device).requires_grad_()
    for reduction in ("mean", "sum"):
        expected, _ = reference_npair_loss(anchor, cand, 0.5, reduction=reduction)
        results = [npair_loss(a, c, 0.5, reduction=reduction, backend="triton") for _ in range(3)]
        for loss in results:
            assert loss.shape == () and loss.dtype == torch.float32
            torch.testing.assert_close(loss.cpu(), expected, rtol=1e-5, atol=1e-5)
            assert torch.equal(loss, results[0])  # the same summation order every time
    grads = torch.autograd.grad(npair_loss(a, c, 0.5, backend="triton"), (a, c))
    ref_a, ref_c = anchor.clone().requires_grad_(), cand.clone().requires_grad_()
    expected_grads = torch.autograd.grad(reference_npair_loss(ref_a, ref_c, 0.5)[0], (ref_a, ref_c))
    for got, wanted in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got.cpu(), wanted, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("layout", ["expanded", "strided"])
def test_triton_backward_reads_a_strided_incoming_gradient(monkeypatch, generator, layout):
    """reduction="none" then .sum() hands backward an expanded (stride 0) gradient; the
    kernel reads it, and any other stride, in place: no copy launch."""
    device = _triton_device(monkeypatch)
    anchor = torch.randn(5, 12, generator=generator).to(device)
    cand = torch.randn(5, 3, 12, generator=generator).to(device)
    grad = (
        torch.tensor(0.7).expand(5)
        if layout == "expanded"
        else torch.randn(10, generator=generator)[::2]
    )
    results = []
    for backend in ("triton", "torch"):
        a, c = anchor.clone().requires_grad_(), cand.clone().requires_grad_()
        loss = npair_loss(a, c, 0.2, reduction="none", backend=backend)
        results.append(torch.autograd.grad(loss, (a, c), grad.to(device)))
    for got, wanted in zip(*results, strict=True):
        torch.testing.assert_close(got, wanted, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "mask"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_triton_one_launch_each_way(monkeypatch, masked, reduction):
    device = _triton_device(monkeypatch)
    from fastunlearn.ops import npair as npair_op
    from fastunlearn.ops.triton_kernels import npair as triton_npair

    launches = []

    class Counted:
        def __init__(self, name):
            self.name, self.kernel = name, getattr(triton_npair, name)

        def __getitem__(self, grid):
            launches.append(self.name)
            return self.kernel[grid]

    for name in ("_npair_fwd_kernel", "_npair_bwd_kernel"):
        monkeypatch.setattr(triton_npair, name, Counted(name))

    def torch_reduction(per_row, reduction):
        raise AssertionError("the Triton path reduced the rows with PyTorch ops")

    monkeypatch.setattr(npair_op, "_reduce", torch_reduction)
    triton_npair._counter(device)  # the counter is allocated (and zeroed) on first use only
    anchor = torch.randn(6, 20, device=device, requires_grad=True)
    cand = torch.randn(6, 4, 20, device=device, requires_grad=True)
    mask = torch.ones(6, 4, dtype=torch.bool, device=device) if masked else None
    loss = npair_loss(anchor, cand, 0.1, cand_mask=mask, reduction=reduction, backend="triton")
    loss.backward(torch.ones_like(loss))
    assert launches == ["_npair_fwd_kernel", "_npair_bwd_kernel"]


@pytest.mark.cuda
@pytest.mark.parametrize("masked", [False, True], ids=["no-mask", "mask"])
def test_triton_two_cuda_kernels_per_forward_backward(masked):
    """On the device, forward ("mean") + backward is exactly two kernels: no ones() for a
    missing mask, no mean, no gradient expand/divide/copy, no host read of the mask."""
    from torch.profiler import ProfilerActivity, profile

    anchor = torch.randn(64, 2048, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    cand = torch.randn(64, 5, 2048, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    mask = torch.ones(64, 5, dtype=torch.bool, device="cuda") if masked else None
    grad = torch.ones((), device="cuda")
    for _ in range(2):  # compile and allocate the counter outside the profile
        torch.autograd.grad(npair_loss(anchor, cand, 0.1, cand_mask=mask), (anchor, cand), grad)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        torch.autograd.grad(npair_loss(anchor, cand, 0.1, cand_mask=mask), (anchor, cand), grad)
        torch.cuda.synchronize()
    kernels = [
        event.name for event in prof.events() if event.device_type == torch.autograd.DeviceType.CUDA
    ]
    assert len(kernels) == 2, kernels


@pytest.mark.cuda
def test_triton_reduction_is_deterministic_on_cuda():
    """Whichever program arrives last, the rows are summed in row order: bitwise repeatable."""
    anchor = torch.randn(4096, 256, device="cuda")
    cand = torch.randn(4096, 6, 256, device="cuda")
    losses = [npair_loss(anchor, cand, 0.1) for _ in range(20)]
    assert all(torch.equal(loss, losses[0]) for loss in losses)
    expected, _ = reference_npair_loss(anchor, cand, 0.1)
    torch.testing.assert_close(losses[0], expected, rtol=1e-5, atol=1e-5)
