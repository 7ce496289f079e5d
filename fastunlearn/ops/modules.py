"""The three ops as ``nn.Module``s, for code that composes losses and layers as modules.
Each holds its options and calls the functional op in ``forward``."""

from __future__ import annotations

import torch
from torch import nn

from fastunlearn.ops.linear_nll import linear_nll
from fastunlearn.ops.npair import npair_loss
from fastunlearn.ops.pooling import position_weighted_mean_pool


class LinearNLLLoss(nn.Module):
    """``forward(x[N, H], weight[V, H], labels[N], bias=None, token_weight=None)``: the
    negative log-likelihood of ``x @ weight.T + bias`` without the [N, V] logits, times
    ``scale`` (-1: gradient ascent)."""

    def __init__(
        self,
        scale: float = 1.0,
        ignore_index: int = -100,
        reduction: str = "mean",
        *,
        backend: str | None = None,
    ):
        super().__init__()
        self.scale, self.ignore_index, self.reduction = scale, ignore_index, reduction
        self.backend = backend

    def forward(
        self,
        x: torch.Tensor,
        weight: torch.Tensor,
        labels: torch.Tensor,
        bias: torch.Tensor | None = None,
        token_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return linear_nll(
            x,
            weight,
            labels,
            bias,
            token_weight,
            self.scale,
            self.ignore_index,
            self.reduction,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return f"scale={self.scale}, ignore_index={self.ignore_index}, reduction={self.reduction}"


class NPairLoss(nn.Module):
    """``forward(anchor[B, D], cand[B, K, D], cand_mask=None)``: the N-pair softmax loss with
    ``cand[:, 0]`` the positive."""

    def __init__(
        self,
        temperature: float,
        similarity: str = "cosine",
        reduction: str = "mean",
        *,
        backend: str | None = None,
    ):
        super().__init__()
        self.temperature, self.similarity, self.reduction = temperature, similarity, reduction
        self.backend = backend

    def forward(
        self, anchor: torch.Tensor, cand: torch.Tensor, cand_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return npair_loss(
            anchor,
            cand,
            self.temperature,
            self.similarity,
            cand_mask,
            self.reduction,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, similarity={self.similarity}"


class PositionWeightedMeanPool(nn.Module):
    """``forward(hidden[B, T, D], mask[B, T]) -> [B, D]``: the masked tokens' mean, the k-th
    masked token weighted k."""

    def __init__(self, *, backend: str | None = None):
        super().__init__()
        self.backend = backend

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return position_weighted_mean_pool(hidden, mask, backend=self.backend)
