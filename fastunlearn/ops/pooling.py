"""Position-weighted mean pooling (docs/ops.md).

w_t = mask_t * (number of masked-in tokens at positions <= t); e = sum_t w_t h_t / sum_t w_t.
Later tokens of a causal model have seen more context, hence the larger weight.
"""

from __future__ import annotations

import torch

from fastunlearn.ops.backend import kernels, select_backend
from fastunlearn.ops.validation import check_same_device, check_shape, check_tensor


def position_weights(mask: torch.Tensor) -> torch.Tensor:
    """Normalised pooling weights [B,T] in fp32; an all-zero mask row gives zero weights."""
    m = mask.to(torch.float32)
    w = m * torch.cumsum(m, dim=1)
    total = w.sum(dim=1, keepdim=True)
    return w / torch.where(total > 0, total, torch.ones_like(total))


def reference_position_weighted_mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Readable ground truth: differentiable through plain autograd."""
    m = mask.to(torch.float64 if hidden.dtype == torch.float64 else torch.float32)
    weights = m * torch.cumsum(m, dim=1)
    total = weights.sum(dim=1, keepdim=True)
    pooled = (weights[:, :, None] * hidden.to(m.dtype)).sum(dim=1) / total.clamp_min(1)
    return pooled.to(hidden.dtype)


class PositionWeightedMeanPoolFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, mask: torch.Tensor, backend: str) -> torch.Tensor:
        impl = kernels(backend)
        weights = position_weights(mask)
        ctx.save_for_backward(weights)
        ctx.impl, ctx.dtype = impl, hidden.dtype
        return impl.pool_forward(hidden.contiguous(), weights)

    @staticmethod
    def backward(ctx, grad_pooled: torch.Tensor):
        (weights,) = ctx.saved_tensors
        grad_hidden = ctx.impl.pool_backward(grad_pooled.contiguous(), weights, ctx.dtype)
        return grad_hidden, None, None


def position_weighted_mean_pool(
    hidden: torch.Tensor, mask: torch.Tensor, *, backend: str | None = None
) -> torch.Tensor:
    """Pool hidden[B,T,D] over the positions where mask[B,T] is nonzero -> [B,D]."""
    check_tensor("hidden", hidden, ndim=3, floating=True)
    check_tensor("mask", mask)
    check_shape("mask", mask, hidden.shape[:2], "[B, T] of hidden")
    check_same_device(hidden=hidden, mask=mask)
    return PositionWeightedMeanPoolFunction.apply(
        hidden, mask, select_backend(hidden.device, backend)
    )
