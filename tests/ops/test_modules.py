"""The nn.Module wrappers compute what the functional ops do, with their options."""

import torch

from fastunlearn import LinearNLLLoss, NPairLoss, PositionWeightedMeanPool
from fastunlearn.ops import linear_nll, npair_loss, position_weighted_mean_pool


def test_modules_equal_the_functional_ops(generator):
    rng = generator
    x = torch.randn(7, 12, generator=rng, requires_grad=True)
    weight = torch.randn(33, 12, generator=rng)
    labels = torch.randint(0, 33, (7,), generator=rng)
    labels[2] = -1
    module = LinearNLLLoss(scale=-1.0, ignore_index=-1, reduction="sum")
    torch.testing.assert_close(
        module(x, weight, labels),
        linear_nll(x, weight, labels, scale=-1.0, ignore_index=-1, reduction="sum"),
    )
    anchor, cand = torch.randn(3, 8, generator=rng), torch.randn(3, 4, 8, generator=rng)
    torch.testing.assert_close(
        NPairLoss(0.2, "dot")(anchor, cand), npair_loss(anchor, cand, 0.2, "dot")
    )
    hidden = torch.randn(2, 5, 8, generator=rng)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    torch.testing.assert_close(
        PositionWeightedMeanPool()(hidden, mask), position_weighted_mean_pool(hidden, mask)
    )
    assert "scale=-1.0" in repr(module)
