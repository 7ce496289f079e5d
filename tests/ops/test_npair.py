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
