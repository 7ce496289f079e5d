"""Position-weighted mean pooling (docs/ops.md).

w_t = mask_t * (number of masked-in tokens at positions <= t); e = sum_t w_t h_t / sum_t w_t.
Later tokens of a causal model have seen more context, hence the larger weight. The Triton
backend builds the weights inside its forward kernel from the mask (two launches for forward
+ backward); the torch and C++ backends take them from ``position_weights``.
"""

from __future__ import annotations

import importlib

import torch
from torch import Tensor

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


def _forward(hidden: Tensor, mask: Tensor, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """(pooled, weights, row sums): the weights unnormalised with their sums (Triton), or
    normalised with an empty tensor for the sums (torch, C++)."""
    fused = _mask_kernels(backend)
    if fused is not None:  # reads any strides: a view such as hidden[::k] is not copied
        return fused.pool_forward_from_mask(hidden, mask)
    weights = position_weights(mask)
    pooled = kernels(backend).pool_forward(hidden.contiguous(), weights)
    return pooled, weights, weights.new_empty(0)


def _backward(
    grad_pooled: Tensor, weights: Tensor, totals: Tensor, dtype: torch.dtype, backend: str
) -> Tensor:
    fused = _mask_kernels(backend)
    if fused is not None:
        return fused.pool_backward_saved(grad_pooled.contiguous(), weights, totals, dtype)
    return kernels(backend).pool_backward(grad_pooled.contiguous(), weights, dtype)


class PositionWeightedMeanPoolFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, mask: Tensor, backend: str) -> Tensor:
        pooled, weights, totals = _forward(hidden, mask, backend)
        ctx.dtype, ctx.backend = hidden.dtype, backend
        ctx.save_for_backward(weights, totals)
        return pooled

    @staticmethod
    def backward(ctx, grad_pooled: Tensor):
        weights, totals = ctx.saved_tensors
        return _backward(grad_pooled, weights, totals, ctx.dtype, ctx.backend), None, None


# Under torch.compile: the same forward and backward as torch.library custom ops, opaque to
# the tracer (no graph break), with fakes that give their output shapes.


@torch.library.custom_op("fastunlearn::position_weighted_mean_pool", mutates_args=())
def _pool_op(hidden: Tensor, mask: Tensor, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    return _forward(hidden, mask, backend)


@_pool_op.register_fake
def _(hidden, mask, backend):
    rows, length, dim = hidden.shape
    weights = hidden.new_empty((rows, length), dtype=torch.float32)
    totals = weights.new_empty(rows if _mask_kernels(backend) is not None else 0)
    return hidden.new_empty((rows, dim)), weights, totals


@torch.library.custom_op("fastunlearn::position_weighted_mean_pool_backward", mutates_args=())
def _pool_backward_op(
    grad_pooled: Tensor, weights: Tensor, totals: Tensor, dtype: torch.dtype, backend: str
) -> Tensor:
    return _backward(grad_pooled, weights, totals, dtype, backend)


@_pool_backward_op.register_fake
def _(grad_pooled, weights, totals, dtype, backend):
    return grad_pooled.new_empty((*weights.shape, grad_pooled.shape[1]), dtype=dtype)


def _pool_setup(ctx, inputs, output):
    hidden, _, backend = inputs
    ctx.dtype, ctx.backend = hidden.dtype, backend
    ctx.save_for_backward(output[1], output[2])


def _pool_backward_formula(ctx, grad_pooled, _grad_weights, _grad_totals):
    weights, totals = ctx.saved_tensors
    return _pool_backward_op(grad_pooled, weights, totals, ctx.dtype, ctx.backend), None, None


_pool_op.register_autograd(_pool_backward_formula, setup_context=_pool_setup)


def position_weighted_mean_pool(
    hidden: torch.Tensor, mask: torch.Tensor, *, backend: str | None = None
) -> torch.Tensor:
    """Pool hidden[B,T,D] over the positions where mask[B,T] is nonzero -> [B,D]."""
    check_tensor("hidden", hidden, ndim=3, floating=True)
    check_tensor("mask", mask)
    check_shape("mask", mask, hidden.shape[:2], "[B, T] of hidden")
    check_same_device(hidden=hidden, mask=mask)
    backend = select_backend(hidden.device, backend)
    if torch.compiler.is_compiling():
        return _pool_op(hidden, mask, backend)[0]
    return PositionWeightedMeanPoolFunction.apply(hidden, mask, backend)
