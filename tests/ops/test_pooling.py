import pytest
import torch

from fastunlearn.ops import position_weighted_mean_pool, reference_position_weighted_mean_pool
from tests.ops.utils import assert_close

SHAPES = [(1, 1, 7), (3, 5, 33), (4, 17, 64), (2, 40, 100)]


def random_mask(batch, length, generator, padding_side="right"):
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    positions = torch.arange(length)[None, :]
    if padding_side == "right":
        return (positions < lengths[:, None]).long()
    return (positions >= length - lengths[:, None]).long()


def test_reference_weights_count_masked_in_tokens():
    hidden = torch.arange(4.0)[None, :, None].expand(1, 4, 1).contiguous()
    mask = torch.tensor([[0, 1, 0, 1]])
    # positions 1 and 3 are the 1st and 2nd pooled tokens: weights 1 and 2
    pooled = reference_position_weighted_mean_pool(hidden, mask)
    assert pooled.item() == pytest.approx((1 * 1.0 + 2 * 3.0) / 3)


def test_reference_gradcheck():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 5, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    mask = random_mask(2, 5, generator)
    assert torch.autograd.gradcheck(
        lambda h: reference_position_weighted_mean_pool(h, mask), (hidden,)
    )


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("padding_side", ["right", "left", "scattered"])
def test_matches_reference(device_backend, dtype, generator, shape, padding_side):
    device, backend = device_backend
    batch, length, dim = shape
    if padding_side == "scattered":
        mask = (torch.rand(batch, length, generator=generator) < 0.6).long()
        mask[:, 0] = 1
    else:
        mask = random_mask(batch, length, generator, padding_side)
    hidden32 = torch.randn(batch, length, dim, generator=generator)
    hidden = hidden32.to(dtype).to(device).requires_grad_()
    grad_out = torch.randn(batch, dim, generator=generator)

    pooled = position_weighted_mean_pool(hidden, mask.to(device), backend=backend)
    pooled.backward(grad_out.to(device, dtype))

    reference_input = hidden.detach().cpu().float().requires_grad_()
    expected = reference_position_weighted_mean_pool(reference_input, mask)
    expected.backward(grad_out.to(dtype).float())
    assert pooled.dtype == dtype and pooled.shape == (batch, dim)
    assert_close(pooled, expected, dtype)
    assert_close(hidden.grad, reference_input.grad, dtype)


def test_empty_row_gives_zero_vector_and_gradient(device_backend):
    device, backend = device_backend
    hidden = torch.randn(2, 6, 9, device=device, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]], device=device)
    pooled = position_weighted_mean_pool(hidden, mask, backend=backend)
    pooled.sum().backward()
    assert torch.all(pooled[1] == 0)
    assert torch.all(hidden.grad[1] == 0)
    assert torch.all(hidden.grad[0, 3:] == 0)


@pytest.mark.parametrize(
    "shape", [(0, 5, 7), (3, 0, 7), (0, 0, 7), (3, 5, 0)], ids=["B0", "T0", "B0-T0", "D0"]
)
def test_empty_batch_sequence_or_hidden(device_backend, dtype, generator, shape):
    """B = 0 gives an empty [0, D] result; T = 0 pools nothing, so zeros."""
    device, backend = device_backend
    batch, length, dim = shape
    hidden = torch.randn(shape, generator=generator).to(device, dtype).requires_grad_()
    mask = torch.ones(batch, length, dtype=torch.long, device=device)
    pooled = position_weighted_mean_pool(hidden, mask, backend=backend)
    assert pooled.shape == (batch, dim) and pooled.dtype == dtype
    expected = reference_position_weighted_mean_pool(hidden.detach().cpu().float(), mask.cpu())
    assert torch.equal(pooled.float().cpu(), expected)
    pooled.backward(torch.randn(batch, dim, generator=generator).to(device, dtype))
    assert hidden.grad.shape == shape and hidden.grad.dtype == dtype
    assert torch.all(hidden.grad == 0)  # every weight is 0 or there is nothing to weight


def test_bool_and_float_masks_agree(device_backend):
    device, backend = device_backend
    hidden = torch.randn(3, 8, 5, device=device)
    mask = torch.rand(3, 8, device=device) > 0.3
    as_bool = position_weighted_mean_pool(hidden, mask, backend=backend)
    as_float = position_weighted_mean_pool(hidden, mask.float(), backend=backend)
    torch.testing.assert_close(as_bool, as_float)


@pytest.mark.parametrize(
    "hidden, mask, message",
    [
        (torch.randn(2, 3), torch.ones(2, 3), "hidden must have 3 dimensions"),
        (torch.randn(2, 3, 4), torch.ones(2, 4), "mask must have shape"),
        (torch.randint(0, 5, (2, 3, 4)), torch.ones(2, 3), "hidden must be a floating tensor"),
        (torch.randn(2, 3, 4), [[1, 1, 1]], "mask must be a torch.Tensor"),
    ],
)
def test_bad_input_names_the_argument(hidden, mask, message):
    with pytest.raises(ValueError, match=message):
        position_weighted_mean_pool(hidden, mask)


# ---------------------------------------------------------------------------------------------
# Triton: the weights are built inside the forward kernel from the mask (a running count
# carried across T blocks); forward and backward are one launch each.


def _triton_device(monkeypatch):
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        return torch.device("cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    return torch.device("cpu")


def _mask_of_kind(kind, batch, length, generator):
    positions = torch.arange(length)[None, :]
    if kind == "right-padded":
        lengths = torch.randint(1, length + 1, (batch,), generator=generator)
        lengths[0] = length  # one full row: the count runs through every T block
        return positions < lengths[:, None]
    if kind == "left-padded":
        lengths = torch.randint(1, length + 1, (batch,), generator=generator)
        lengths[0] = 1  # a single token at the very end
        return positions >= length - lengths[:, None]
    if kind == "holes":  # scattered positions, a span in the middle, an empty row
        mask = torch.rand(batch, length, generator=generator) < 0.5
        mask[0] = (positions[0] > length // 3) & (positions[0] < 2 * length // 3)
        mask[-1] = False
        return mask
    if kind == "multipliers":  # mask values used as multipliers, as position_weights does
        return torch.rand(batch, length, generator=generator) * (
            torch.rand(batch, length, generator=generator) < 0.7
        )
    raise ValueError(kind)


# (B, T, D): 16 and 5 T blocks of the small-batch tiling (64 x 64 tiles; 2 and 3 D blocks); and
# the tiling of a large batch (512-wide D blocks of 8-row T blocks: the count carried over 6
# blocks, 3 D blocks), reached at a small B by lifting the minimum program count.
TRITON_SHAPES = [(3, 1000, 70), (2, 257, 130), (2, 45, 1100)]


@pytest.mark.parametrize("shape", TRITON_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", ["right-padded", "left-padded", "holes", "multipliers"])
def test_triton_weights_in_kernel_long_sequences(monkeypatch, generator, dtype, shape, kind):
    device = _triton_device(monkeypatch)
    from fastunlearn.ops.triton_kernels import pooling as triton_pooling

    if shape[2] > 1024:
        monkeypatch.setattr(triton_pooling, "_MIN_PROGRAMS", 1)

    batch, length, dim = shape
    mask = _mask_of_kind(kind, batch, length, generator)
    hidden32 = torch.randn(batch, length, dim, generator=generator)
    hidden = hidden32.to(dtype).to(device).requires_grad_()
    grad_out = torch.randn(batch, dim, generator=generator).to(dtype)

    # The kernel's own weights and row sums against position_weights' formula.
    pooled, weights, totals = triton_pooling.pool_forward_from_mask(
        hidden.detach(), mask.to(device).contiguous()
    )
    m = mask.float()
    expected_weights = m * torch.cumsum(m, dim=1)
    torch.testing.assert_close(weights.cpu(), expected_weights, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(totals.cpu(), expected_weights.sum(1), rtol=1e-6, atol=1e-4)

    # Through the op, forward and backward, against the reference.
    pooled = position_weighted_mean_pool(hidden, mask.to(device), backend="triton")
    pooled.backward(grad_out.to(device))
    reference_input = hidden.detach().cpu().float().requires_grad_()
    expected = reference_position_weighted_mean_pool(reference_input, mask)
    expected.backward(grad_out.float())
    assert pooled.dtype == dtype and pooled.shape == (batch, dim)
    assert_close(pooled, expected, dtype)
    assert_close(hidden.grad, reference_input.grad, dtype)
    empty = ~mask.bool().any(dim=1)
    assert torch.all(pooled.cpu()[empty] == 0) and torch.all(hidden.grad.cpu()[empty] == 0)


@pytest.mark.parametrize(
    "shape", [(0, 5, 7), (0, 300, 64), (3, 0, 7), (2, 9, 0)], ids=["B0", "B0-long", "T0", "D0"]
)
def test_triton_empty_shapes(monkeypatch, dtype, shape):
    device = _triton_device(monkeypatch)
    from fastunlearn.ops.triton_kernels import pooling as triton_pooling

    batch, length, dim = shape
    hidden = torch.randn(shape).to(device, dtype)
    mask = torch.ones(batch, length, dtype=torch.bool, device=device)
    pooled, weights, totals = triton_pooling.pool_forward_from_mask(hidden, mask)
    assert pooled.shape == (batch, dim) and torch.all(pooled == 0)
    assert weights.shape == (batch, length) and totals.shape == (batch,)
    grad = triton_pooling.pool_backward_saved(
        torch.ones(batch, dim, device=device, dtype=dtype), weights, totals, dtype
    )
    assert grad.shape == shape and grad.dtype == dtype


def test_triton_one_launch_each_way_and_no_host_weights(monkeypatch):
    """Forward + backward through the op: one forward kernel, one backward kernel, and
    position_weights (the host-side weights of the other backends) never runs."""
    device = _triton_device(monkeypatch)
    from fastunlearn.ops import pooling as pooling_op
    from fastunlearn.ops.triton_kernels import pooling as triton_pooling

    launches = []

    class Counted:
        def __init__(self, name):
            self.name, self.kernel = name, getattr(triton_pooling, name)

        def __getitem__(self, grid):
            launches.append(self.name)
            return self.kernel[grid]

    for name in ("_pool_fwd_kernel", "_pool_bwd_kernel"):
        monkeypatch.setattr(triton_pooling, name, Counted(name))

    def host_weights(mask):
        raise AssertionError("position_weights ran on the Triton path")

    monkeypatch.setattr(pooling_op, "position_weights", host_weights)
    hidden = torch.randn(4, 100, 33, device=device, requires_grad=True)
    mask = torch.rand(4, 100, device=device) > 0.4
    pooled = position_weighted_mean_pool(hidden, mask, backend="triton")
    pooled.backward(torch.ones_like(pooled))
    assert launches == ["_pool_fwd_kernel", "_pool_bwd_kernel"]


@pytest.mark.cuda
def test_triton_two_cuda_kernels_per_forward_backward():
    """On the device, forward + backward is exactly two kernels (no weight-building ops)."""
    from torch.profiler import ProfilerActivity, profile

    hidden = torch.randn(8, 512, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    mask = torch.rand(8, 512, device="cuda") > 0.3
    grad = torch.randn(8, 256, device="cuda", dtype=torch.bfloat16)
    for _ in range(2):  # compile and cache outside the profile
        torch.autograd.grad(position_weighted_mean_pool(hidden, mask), hidden, grad)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        torch.autograd.grad(position_weighted_mean_pool(hidden, mask), hidden, grad)
        torch.cuda.synchronize()
    kernels = [
        event.name for event in prof.events() if event.device_type == torch.autograd.DeviceType.CUDA
    ]
    assert len(kernels) == 2, kernels


@pytest.mark.parametrize("layout", ["every-kth-row", "expanded-mask", "d-strided"])
def test_triton_reads_strided_inputs_in_place(monkeypatch, generator, layout):
    """Views (WPN's hidden[::k] and prompt_mask[::k], an expanded mask, a non-unit D stride)
    are read through their strides: the same result as from contiguous copies."""
    device = _triton_device(monkeypatch)
    from fastunlearn.ops.triton_kernels import pooling as triton_pooling

    full = torch.randn(6, 70, 40, generator=generator).to(device)
    full_mask = torch.rand(6, 70, generator=generator).to(device) > 0.3
    if layout == "every-kth-row":
        hidden, mask = full[::3], full_mask[::3]
    elif layout == "expanded-mask":
        hidden, mask = full, full_mask[:1].expand(6, 70)
    else:
        hidden, mask = full.transpose(1, 2).contiguous().transpose(1, 2), full_mask
    assert not (hidden.is_contiguous() and mask.is_contiguous())
    got = triton_pooling.pool_forward_from_mask(hidden, mask)
    wanted = triton_pooling.pool_forward_from_mask(hidden.contiguous(), mask.contiguous())
    for actual, expected in zip(got, wanted, strict=True):
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)
    expected = reference_position_weighted_mean_pool(hidden.cpu(), mask.cpu())
    torch.testing.assert_close(got[0].cpu(), expected, rtol=1e-5, atol=1e-5)
