"""C++ CPU implementation of the kernel contract (documented in ``torch_kernels``).

Thin wrappers over ``torch.ops.fastunlearn.*``, registered by the extension ``fastunlearn._C``
built from csrc/. Same signatures, semantics and return dtypes as ``torch_kernels``.
"""

from __future__ import annotations

import torch

import fastunlearn._C  # noqa: F401  (importing registers torch.ops.fastunlearn)
from fastunlearn.ops.chunked import default_chunk_size  # noqa: F401  (contract)

_ops = torch.ops.fastunlearn


def pool_forward(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return _ops.pool_forward(hidden, weights)


def pool_backward(
    grad_pooled: torch.Tensor, weights: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    return _ops.pool_backward(grad_pooled, weights, dtype)


def npair_forward(anchor, cand, cand_mask, inv_temperature, cosine, eps):
    return _ops.npair_forward(
        anchor, cand, cand_mask, float(inv_temperature), bool(cosine), float(eps)
    )


def npair_backward(grad_loss, anchor, cand, cand_mask, logits, inv_temperature, cosine, eps):
    return _ops.npair_backward(
        grad_loss, anchor, cand, cand_mask, logits, float(inv_temperature), bool(cosine), float(eps)
    )


def linear_nll_fused(x, weight, bias, labels, coef, chunk_size, needs_grad):
    return _ops.linear_nll_fused(
        x, weight, bias, labels, coef, int(chunk_size), [bool(flag) for flag in needs_grad]
    )
