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
