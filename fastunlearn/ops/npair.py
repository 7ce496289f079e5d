"""N-pair similarity + softmax loss (docs/ops.md).

cand[:, 0] is the positive, cand[:, 1:] the negatives; logit_k = sim(a, c_k) / tau and
loss_b = logsumexp_k logit_k - logit_0 = log(1 + sum_{k>=1} exp(logit_k - logit_0)).
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F
from torch import Tensor

from fastunlearn.ops.backend import kernels, select_backend
from fastunlearn.ops.validation import (
    FP32_MAX,
    check_number,
    check_same_device,
    check_shape,
    check_tensor,
)

SIMILARITIES = ("cosine", "dot")
REDUCTIONS = ("mean", "sum", "none")
COSINE_EPS = 1e-8


def reference_npair_loss(
    anchor, cand, temperature, similarity="cosine", cand_mask=None, reduction="mean"
):
    """Readable ground truth: returns (loss, logits[B,K]); differentiable through autograd."""
    a, c = anchor, cand
    if similarity == "cosine":
        a = F.normalize(a, dim=-1, eps=COSINE_EPS)
        c = F.normalize(c, dim=-1, eps=COSINE_EPS)
    logits = (c * a[:, None, :]).sum(-1) / temperature
    if cand_mask is not None:
        logits = logits.masked_fill(~cand_mask.bool(), float("-inf"))
    per_row = torch.logsumexp(logits, dim=1) - logits[:, 0]
    return _reduce(per_row, reduction), logits


def _reduce(per_row: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        # The mean over no rows is 0 (as linear_nll with no counted token), not NaN. The row
        # count is a shape: no host read.
        return per_row.mean() if per_row.numel() else per_row.sum()
    if reduction == "sum":
        return per_row.sum()
    return per_row


def _fused_kernels(backend: str):
    """The backend's one-launch-each-way kernels (row reduction and incoming gradient handled
    inside), or None: Triton has them; the torch and C++ paths reduce with PyTorch ops."""
    if backend != "triton":
        return None
    return importlib.import_module("fastunlearn.ops.triton_kernels.npair")


def _forward(anchor, cand, cand_mask, inv_temperature, cosine, reduction, backend):
    """(loss, logits[B, K] fp32) on ``backend``."""
    anchor, cand = anchor.contiguous(), cand.contiguous()
    fused = _fused_kernels(backend)
    if fused is not None:
        return fused.npair_forward_reduced(
            anchor, cand, cand_mask, inv_temperature, cosine, COSINE_EPS, reduction
        )
    if cand_mask is None:
        cand_mask = torch.ones(cand.shape[:2], dtype=torch.bool, device=cand.device)
    per_row, logits = kernels(backend).npair_forward(
        anchor, cand, cand_mask, inv_temperature, cosine, COSINE_EPS
    )
    return _reduce(per_row, reduction), logits


def _backward(
    grad_loss, anchor, cand, cand_mask, logits, inv_temperature, cosine, reduction, backend
):
    """(grad_anchor, grad_cand) from forward's logits."""
    anchor, cand = anchor.contiguous(), cand.contiguous()
    fused = _fused_kernels(backend)
    if fused is not None:
        return fused.npair_backward_reduced(
            grad_loss, anchor, cand, logits, inv_temperature, cosine, COSINE_EPS, reduction
        )
    if cand_mask is None:
        cand_mask = torch.ones(cand.shape[:2], dtype=torch.bool, device=cand.device)
    rows = anchor.shape[0]
    grad_rows = grad_loss.float().expand(rows) if reduction != "none" else grad_loss.float()
    if reduction == "mean":
        grad_rows = grad_rows / rows
    return kernels(backend).npair_backward(
        grad_rows.contiguous(), anchor, cand, cand_mask, logits, inv_temperature, cosine, COSINE_EPS
    )


class NPairLossFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, anchor, cand, cand_mask, temperature, cosine, reduction, backend):
        inv_temperature = 1.0 / temperature
        loss, logits = _forward(
            anchor, cand, cand_mask, inv_temperature, cosine, reduction, backend
        )
        ctx.settings = (inv_temperature, cosine, reduction, backend)
        ctx.save_for_backward(anchor, cand, cand_mask, logits)
        ctx.mark_non_differentiable(logits)
        return loss, logits

    @staticmethod
    def backward(ctx, grad_loss, _grad_logits):
        grads = _backward(grad_loss, *ctx.saved_tensors, *ctx.settings)
        return *grads, None, None, None, None, None


# Under torch.compile: the same forward and backward as torch.library custom ops, opaque to
# the tracer (no graph break), with fakes that give their output shapes.


@torch.library.custom_op("fastunlearn::npair_loss", mutates_args=())
def _npair_op(
    anchor: Tensor,
    cand: Tensor,
    cand_mask: Tensor | None,
    inv_temperature: float,
    cosine: bool,
    reduction: str,
    backend: str,
) -> tuple[Tensor, Tensor]:
    return _forward(anchor, cand, cand_mask, inv_temperature, cosine, reduction, backend)


@_npair_op.register_fake
def _(anchor, cand, cand_mask, inv_temperature, cosine, reduction, backend):
    rows, candidates = cand.shape[:2]
    loss_shape = (rows,) if reduction == "none" else ()
    logits = anchor.new_empty((rows, candidates), dtype=torch.float32)
    return logits.new_empty(loss_shape), logits


@torch.library.custom_op("fastunlearn::npair_loss_backward", mutates_args=())
def _npair_backward_op(
    grad_loss: Tensor,
    anchor: Tensor,
    cand: Tensor,
    cand_mask: Tensor | None,
    logits: Tensor,
    inv_temperature: float,
    cosine: bool,
    reduction: str,
    backend: str,
) -> tuple[Tensor, Tensor]:
    return _backward(
        grad_loss, anchor, cand, cand_mask, logits, inv_temperature, cosine, reduction, backend
    )


@_npair_backward_op.register_fake
def _(grad_loss, anchor, cand, cand_mask, logits, inv_temperature, cosine, reduction, backend):
    return torch.empty_like(anchor), torch.empty_like(cand)


def _npair_setup(ctx, inputs, output):
    anchor, cand, cand_mask, *settings = inputs
    ctx.settings = tuple(settings)
    ctx.save_for_backward(anchor, cand, cand_mask, output[1])


def _npair_backward_formula(ctx, grad_loss, _grad_logits):
    grads = _npair_backward_op(grad_loss, *ctx.saved_tensors, *ctx.settings)
    return *grads, None, None, None, None, None


_npair_op.register_autograd(_npair_backward_formula, setup_context=_npair_setup)


def _check_positive_kept(cand_mask: torch.Tensor) -> None:
    # A host read, so only where it costs nothing: eager CPU tensors (as linear_nll's label
    # range check). Elsewhere, a traced graph included, the op keeps column 0 whatever the mask
    # says (see npair_loss).
    if cand_mask.device.type != "cpu" or torch.compiler.is_compiling():
        return
    if not bool(cand_mask[:, 0].all()):
        raise ValueError("cand_mask[:, 0] must be True: column 0 is each row's positive")


def npair_loss(
    anchor: torch.Tensor,
    cand: torch.Tensor,
    temperature: float,
    similarity: str = "cosine",
    cand_mask: torch.Tensor | None = None,
    reduction: str = "mean",
    *,
    return_logits: bool = False,
    backend: str | None = None,
):
    """N-pair loss of anchor[B,D] against cand[B,K,D] (column 0 the positive).

    ``cand_mask[B,K]`` (bool; nonzero = kept) leaves out candidates so rows may have different
    numbers of negatives; column 0 must stay in: checked on CPU tensors (ValueError), and
    treated as kept whatever the mask says elsewhere, where checking would be a host read.
    With ``return_logits`` also returns the detached fp32 logits [B,K] (-inf where masked),
    e.g. for accuracy logging. The loss is fp32. An empty
    batch (B = 0) gives a loss of 0 ("none": an empty [0]) and empty gradients.
    ``temperature`` is a positive finite Python number (not a bool or tensor).
    """
    # Scalars first, before any work: a NaN, inf or bool temperature would train silently wrong.
    temperature = check_number("temperature", temperature, positive=True)
    if 1.0 / temperature > FP32_MAX:  # the kernels take 1/temperature in fp32
        raise ValueError(
            f"1/temperature must fit in fp32 (temperature >= {1 / FP32_MAX:.4g}), "
            f"got {temperature!r}"
        )
    check_tensor("anchor", anchor, ndim=2, floating=True)
    check_tensor("cand", cand, ndim=3, floating=True)
    rows, dim = anchor.shape
    if cand.shape[0] != rows or cand.shape[2] != dim:
        raise ValueError(
            f"cand must have shape [B, K, D] = [{rows}, K, {dim}] to match anchor, "
            f"got {tuple(cand.shape)}"
        )
    if cand.dtype != anchor.dtype:
        raise ValueError(f"cand dtype {cand.dtype} must match anchor dtype {anchor.dtype}")
    if cand.shape[1] < 2:
        raise ValueError(
            "cand needs K >= 2 candidates (one positive, at least one negative), "
            f"got K={cand.shape[1]}"
        )
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if cand_mask is not None:
        check_tensor("cand_mask", cand_mask)
        check_shape("cand_mask", cand_mask, cand.shape[:2], "[B, K] of cand")
    check_same_device(anchor=anchor, cand=cand, cand_mask=cand_mask)
    if cand_mask is not None:
        _check_positive_kept(cand_mask)
    backend = select_backend(anchor.device, backend)
    if cand_mask is not None:
        if backend == "triton":
            # Any dtype (nonzero = kept), and column 0 kept by the kernel: no conversion launch.
            cand_mask = cand_mask.contiguous()
        else:
            cand_mask = cand_mask.bool().contiguous()
            if cand_mask.device.type != "cpu" or torch.compiler.is_compiling():
                # These kernels honour the mask as given, so column 0 is set here (off the
                # hot path: CUDA tensors run Triton unless told otherwise).
                cand_mask = cand_mask.clone()
                cand_mask[:, 0] = True
    cosine = similarity == "cosine"
    if torch.compiler.is_compiling():
        loss, logits = _npair_op(
            anchor, cand, cand_mask, 1.0 / temperature, cosine, reduction, backend
        )
        logits = logits.detach()
    else:
        loss, logits = NPairLossFunction.apply(
            anchor, cand, cand_mask, temperature, cosine, reduction, backend
        )
    return (loss, logits) if return_logits else loss
