"""The ops as ``torch.library`` custom ops: the path ``torch.compile`` traces.

Eager calls go through the autograd Functions of the op files, which keep the gradients that
forward computes and scale them in place in backward (the [V, H] weight gradient never exists
twice). A traced graph cannot hold that in-place trick, so under ``torch.compile`` each op
calls the custom ops here instead: opaque to the tracer (no graph break, whatever the
backend runs inside), with fake implementations that give the output shapes, and backward
formulas registered with ``register_autograd``. Both paths run the same kernels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fastunlearn.ops.backend import kernels


def _or_empty(tensor: Tensor | None, like: Tensor) -> Tensor:
    # A custom op returns tensors, never None: an empty one stands for "not computed".
    return like.new_empty(0) if tensor is None else tensor


@torch.library.custom_op("fastunlearn::linear_nll", mutates_args=())
def linear_nll_op(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    labels: Tensor,
    coef: Tensor,
    chunk_size: int,
    per_token: bool,
    needs_grad: list[bool],
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(loss, nll, grad_x, grad_w, grad_b) of loss = sum_t coef_t * nll_t (per token when
    ``per_token``); the gradients are forward's, for the inputs ``needs_grad`` names
    (none for ``per_token``: its backward recomputes them for the incoming gradient).
    ``chunk_size`` 0 takes the backend's default."""
    impl = kernels(backend)
    chunk = chunk_size or impl.default_chunk_size(x.shape[0], weight.shape[0])
    wanted = (False, False, False) if per_token else tuple(needs_grad)
    nll, grad_x, grad_w, grad_b = impl.linear_nll_fused(
        x, weight, bias, labels, coef, chunk, wanted
    )
    loss = coef * nll if per_token else (coef * nll).sum()
    return loss, nll, _or_empty(grad_x, x), _or_empty(grad_w, x), _or_empty(grad_b, x)


@linear_nll_op.register_fake
def _(x, weight, bias, labels, coef, chunk_size, per_token, needs_grad, backend):
    wanted = (False, False, False) if per_token else tuple(needs_grad)
    nll = x.new_empty(x.shape[0], dtype=torch.float32)
    loss = nll.new_empty(x.shape[0]) if per_token else nll.new_empty(())
    grad_x = torch.empty_like(x) if wanted[0] else x.new_empty(0)
    grad_w = torch.empty_like(weight) if wanted[1] else x.new_empty(0)
    grad_b = torch.empty_like(bias) if wanted[2] and bias is not None else x.new_empty(0)
    return loss, nll, grad_x, grad_w, grad_b


def _linear_nll_setup(ctx, inputs, output):
    x, weight, bias, labels, coef, chunk_size, per_token, needs_grad, backend = inputs
    _, nll, grad_x, grad_w, grad_b = output
    ctx.per_token, ctx.chunk_size, ctx.needs_grad, ctx.backend = (
        per_token,
        chunk_size,
        needs_grad,
        backend,
    )
    ctx.has_bias = bias is not None
    if per_token:
        ctx.save_for_backward(x, weight, bias, labels, coef, nll)
    else:
        ctx.save_for_backward(grad_x, grad_w, grad_b, nll)


def _linear_nll_backward(ctx, grad_loss, _grad_nll, _grad_x, _grad_w, _grad_b):
    nll = ctx.saved_tensors[-1]
    grad_coef = nll * grad_loss.float()
    if ctx.per_token:
        x, weight, bias, labels, coef, _ = ctx.saved_tensors
        _, _, grad_x, grad_w, grad_b = linear_nll_op(
            x,
            weight,
            bias,
            labels,
            (coef * grad_loss.float()).contiguous(),
            ctx.chunk_size,
            False,
            ctx.needs_grad,
            ctx.backend,
        )
        grads = (grad_x, grad_w, grad_b)
    else:
        grads = tuple(grad * grad_loss.to(grad.dtype) for grad in ctx.saved_tensors[:3])
    needs_x, needs_w, needs_b = ctx.needs_grad
    grad_x, grad_w, grad_b = (
        grad if needed else None
        for grad, needed in zip(grads, (needs_x, needs_w, needs_b), strict=True)
    )
    return grad_x, grad_w, grad_b if ctx.has_bias else None, None, grad_coef, None, None, None, None


linear_nll_op.register_autograd(_linear_nll_backward, setup_context=_linear_nll_setup)
