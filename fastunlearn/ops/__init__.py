"""The three fused ops: functional APIs over autograd Functions, and as nn.Modules
(docs/ops.md)."""

from fastunlearn.ops.backend import BACKENDS, select_backend
from fastunlearn.ops.linear_nll import linear_nll, reference_linear_nll
from fastunlearn.ops.modules import LinearNLLLoss, NPairLoss, PositionWeightedMeanPool
from fastunlearn.ops.npair import npair_loss, reference_npair_loss
from fastunlearn.ops.pooling import (
    position_weighted_mean_pool,
    reference_position_weighted_mean_pool,
)

__all__ = [
    "BACKENDS",
    "LinearNLLLoss",
    "NPairLoss",
    "PositionWeightedMeanPool",
    "linear_nll",
    "npair_loss",
    "position_weighted_mean_pool",
    "reference_linear_nll",
    "reference_npair_loss",
    "reference_position_weighted_mean_pool",
    "select_backend",
]
