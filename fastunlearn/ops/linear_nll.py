"""Linear + negative log-likelihood without the full logits (docs/ops.md).

loss = scale * sum_t w_t * (logsumexp(W x_t + b) - (W x_t + b)[y_t]), divided by the sum of
w over counted tokens for reduction="mean". For "mean"/"sum" the gradient is computed during
forward, chunk by chunk, with ``scale`` folded in, so backward is one multiply by the
incoming scalar and gradient ascent (scale=-1) costs nothing extra. reduction="none" keeps
only the per-token NLL in forward and recomputes the chunks in backward for any grad_output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fastunlearn.ops.backend import kernels, select_backend
from fastunlearn.ops.validation import (
    check_integer,
    check_number,
    check_same_device,
    check_shape,
    check_tensor,
)

REDUCTIONS = ("mean", "sum", "none")


def reference_linear_nll(
    x, weight, labels, bias=None, token_weight=None, scale=1.0, ignore_index=-100, reduction="mean"
):
    """Readable ground truth with the logits materialised; differentiable through autograd."""
    logits = F.linear(x, weight, bias).to(
        torch.float64 if x.dtype == torch.float64 else torch.float32
    )
    counted = labels != ignore_index
    nll = -torch.log_softmax(logits, dim=-1).gather(-1, labels.clamp_min(0)[..., None]).squeeze(-1)
    w = torch.ones_like(nll) if token_weight is None else token_weight.to(nll.dtype)
    w = w * counted
    per_token = scale * w * nll
    if reduction == "none":
        return per_token
    total = per_token.sum()
    if reduction == "sum":
        return total
    denominator = w.sum()
    return total / torch.where(denominator != 0, denominator, torch.ones_like(denominator))


class LinearNLLFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, labels, coef, reduction, chunk_size, backend):
        impl = kernels(backend)
        needs_grad = (
            tuple(ctx.needs_input_grad[:3]) if reduction != "none" else (False, False, False)
        )
        nll, grad_x, grad_w, grad_b = impl.linear_nll_fused(
            x, weight, bias, labels, coef, chunk_size, needs_grad
        )
        per_token = coef * nll
        ctx.impl, ctx.reduction, ctx.chunk_size = impl, reduction, chunk_size
        if reduction == "none":
            ctx.save_for_backward(x, weight, bias, labels, coef, nll)
            loss = per_token
        else:
            # Kept on ctx rather than saved: backward scales them in place, so the [V, H] weight
            # gradient never exists twice (save_for_backward would forbid the in-place scale).
            ctx.grads = (grad_x, grad_w, grad_b)
            ctx.save_for_backward(nll)
            loss = per_token.sum()
        ctx.mark_non_differentiable(nll)
        return loss, nll

    @staticmethod
    def backward(ctx, grad_loss, _grad_nll):
        nll = ctx.saved_tensors[-1]
        # loss = sum_t coef_t * nll_t (per token for "none"); autograd carries d/dcoef on to
        # token_weight, through the "mean" normaliser too.
        grad_coef = nll * grad_loss.float() if ctx.needs_input_grad[4] else None
        if ctx.reduction == "none":
            x, weight, bias, labels, coef, _ = ctx.saved_tensors
            grad_x = grad_w = grad_b = None
            if any(ctx.needs_input_grad[:3]):
                recompute_coef = (coef * grad_loss.float()).contiguous()
                _, grad_x, grad_w, grad_b = ctx.impl.linear_nll_fused(
                    x,
                    weight,
                    bias,
                    labels,
                    recompute_coef,
                    ctx.chunk_size,
                    tuple(ctx.needs_input_grad[:3]),
                )
        else:
            if ctx.grads is None:
                raise RuntimeError(
                    "linear_nll's gradients were computed in forward and handed out by a first "
                    "backward; to backpropagate again, compute the loss again"
                )
            grad_x, grad_w, grad_b = ctx.grads
            ctx.grads = None
            # Multiplying by the incoming scalar tensor keeps the device free of host syncs.
            for grad in (grad_x, grad_w, grad_b):
                if grad is not None:
                    grad.mul_(grad_loss.to(grad.dtype))
        return grad_x, grad_w, grad_b, None, grad_coef, None, None, None


# Under torch.compile the op runs as this torch.library custom op instead of the autograd
# Function above: a traced graph cannot keep forward's gradients and scale them in place, so
# backward multiplies out of place; the tracer sees a fake with the output shapes and no break.


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


def _check_inputs(x, weight, labels, bias, token_weight, reduction):
    check_tensor("x", x, floating=True)
    check_tensor("weight", weight, ndim=2, floating=True)
    check_tensor("labels", labels)
    if x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"x must end in the hidden size H={weight.shape[1]} of weight[V, H], "
            f"got {tuple(x.shape)}"
        )
    if x.dtype != weight.dtype:
        raise ValueError(f"x dtype {x.dtype} must match weight dtype {weight.dtype}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f"labels must be an integer tensor, got {labels.dtype}")
    check_shape("labels", labels, x.shape[:-1], "x.shape[:-1]")
    if bias is not None:
        check_tensor("bias", bias, ndim=1, floating=True)
        check_shape("bias", bias, (weight.shape[0],), "[V] of weight")
    if token_weight is not None:
        check_tensor("token_weight", token_weight, floating=True)
        check_shape("token_weight", token_weight, labels.shape, "labels.shape")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    check_same_device(x=x, weight=weight, labels=labels, bias=bias, token_weight=token_weight)


def _check_label_range(labels: torch.Tensor, vocab: int, ignore_index: int) -> None:
    # A host read, so only where it costs nothing: eager CPU tensors. On CUDA, and in a traced
    # graph (where a host read breaks the graph), the kernels treat out-of-range labels as
    # ignored rather than stall the device to check.
    if labels.device.type != "cpu" or torch.compiler.is_compiling():
        return
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= vocab))
    if bool(bad.any()):
        value = labels[bad][0].item()
        raise ValueError(
            f"labels must lie in [0, {vocab}) or equal ignore_index={ignore_index}; found {value}"
        )


def linear_nll(
    x: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    bias: torch.Tensor | None = None,
    token_weight: torch.Tensor | None = None,
    scale: float = 1.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    *,
    chunk_size: int | None = None,
    return_token_logprobs: bool = False,
    backend: str | None = None,
):
    """Fused ``scale * weighted NLL`` of ``F.linear(x, weight, bias)`` against ``labels``.

    x[..., H], labels[...] (ignore_index where not counted), weight[V, H] (may be tied to an
    embedding). "mean" divides by the sum of token weights over counted tokens (0, with zero
    gradients, when nothing is counted, no token at all included); "none" returns
    ``scale * w_t * nll_t`` shaped like labels. The loss is fp32 whatever the input dtype.
    A ``token_weight`` that requires grad gets its gradient (the reference's: for "mean" that
    is ``(scale * nll_t - loss) / sum_s w_s`` on counted tokens, 0 elsewhere). ``scale`` is a
    finite Python number (not a bool or tensor). With ``return_token_logprobs`` also returns
    the detached fp32 log p(y_t) (0 where ignored), shaped like labels. Under autocast, x,
    weight and bias are cast to the autocast dtype first, as F.linear's are.
    """
    # Scalars first, before any work: a NaN, inf or bool scale would train silently wrong.
    scale = check_number("scale", scale)
    ignore_index = check_integer("ignore_index", ignore_index)
    if chunk_size is not None:
        chunk_size = check_integer("chunk_size", chunk_size, positive=True)
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    _check_inputs(x, weight, labels, bias, token_weight, reduction)
    vocab, hidden = weight.shape
    _check_label_range(labels, vocab, ignore_index)
    out_shape = labels.shape
    x2 = x.reshape(-1, hidden).contiguous()
    flat_labels = labels.reshape(-1).long()
    counted = (flat_labels != ignore_index) & (flat_labels >= 0) & (flat_labels < vocab)
    kernel_labels = torch.where(counted, flat_labels, torch.full_like(flat_labels, -1))
    w = counted.float() if token_weight is None else token_weight.reshape(-1).float() * counted
    coef = w * scale
    if reduction == "mean":
        denominator = w.sum()
        coef = coef / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    backend = select_backend(x.device, backend)
    if torch.compiler.is_compiling():
        needs_grad = [
            x.requires_grad,
            weight.requires_grad,
            bias is not None and bias.requires_grad,
        ]
        loss, nll, *_ = linear_nll_op(
            x2,
            weight.contiguous(),
            None if bias is None else bias.contiguous(),
            kernel_labels,
            coef.contiguous(),
            chunk_size or 0,
            reduction == "none",
            needs_grad,
            backend,
        )
        nll = nll.detach()
    else:
        chunk = chunk_size or kernels(backend).default_chunk_size(x2.shape[0], vocab)
        loss, nll = LinearNLLFunction.apply(
            x2,
            weight.contiguous(),
            None if bias is None else bias.contiguous(),
            kernel_labels,
            coef.contiguous(),
            reduction,
            chunk,
            backend,
        )
    if reduction == "none":
        loss = loss.reshape(out_shape)
    if return_token_logprobs:
        return loss, (-nll).reshape(out_shape)
    return loss
