"""Position-weighted mean pooling (docs/ops.md).

w_t = mask_t * (number of masked-in tokens at positions <= t); e = sum_t w_t h_t / sum_t w_t.
Later tokens of a causal model have seen more context, hence the larger weight. The Triton
backend builds the weights inside its forward kernel from the mask (two launches for forward
+ backward); the torch and C++ backends take them from ``position_weights``.
"""

from __future__ import annotations

import importlib

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


def _mask_kernels(backend: str):
    """The backend's kernels that build the weights from the mask themselves, or None.

    Triton does (one launch forward, one backward, nothing on the host); the torch and C++
    paths take the weights from ``position_weights``."""
    if backend != "triton":
        return None
    return importlib.import_module("fastunlearn.ops.triton_kernels.pooling")


class PositionWeightedMeanPoolFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, mask: torch.Tensor, backend: str) -> torch.Tensor:
        hidden = hidden.contiguous()
        ctx.dtype = hidden.dtype
        fused = _mask_kernels(backend)
        if fused is not None:
            pooled, weights, totals = fused.pool_forward_from_mask(hidden, mask.contiguous())
            ctx.save_for_backward(weights, totals)
            ctx.backward_kernel = fused.pool_backward_saved
            return pooled
        impl = kernels(backend)
        weights = position_weights(mask)
        ctx.save_for_backward(weights)
        ctx.backward_kernel = impl.pool_backward
        return impl.pool_forward(hidden, weights)

    @staticmethod
    def backward(ctx, grad_pooled: torch.Tensor):
        grad_hidden = ctx.backward_kernel(grad_pooled.contiguous(), *ctx.saved_tensors, ctx.dtype)
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
