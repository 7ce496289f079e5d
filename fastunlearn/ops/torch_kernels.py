"""PyTorch implementation of the kernel contract shared by every backend.

Each backend module (``torch_kernels``, ``triton_kernels``, ``cpp_kernels``) exposes the
same five functions with the same signatures and semantics; the autograd Functions in
``pooling.py``, ``npair.py`` and ``linear_nll.py`` call them and never look inside. All
accumulate in fp32 and return results in the dtype stated below.

pool_forward(hidden[B,T,D], weights[B,T] f32) -> pooled[B,D] (hidden.dtype)
    pooled[b] = sum_t weights[b,t] * hidden[b,t]   (weights already normalised)
pool_backward(grad_pooled[B,D], weights[B,T] f32, dtype) -> grad_hidden[B,T,D] (dtype)
    grad_hidden[b,t] = weights[b,t] * grad_pooled[b]

npair_forward(anchor[B,D], cand[B,K,D], cand_mask[B,K] bool, inv_temperature, cosine, eps)
    -> (loss[B] f32, logits[B,K] f32)
    logits[b,k] = sim(anchor[b], cand[b,k]) * inv_temperature, -inf where cand_mask is False;
    loss[b] = logsumexp_k logits[b,k] - logits[b,0]. Cosine similarity normalises each
    vector by max(||v||, eps).
npair_backward(grad_loss[B] f32, anchor, cand, cand_mask, logits, inv_temperature, cosine, eps)
    -> (grad_anchor[B,D] anchor.dtype, grad_cand[B,K,D] cand.dtype)

linear_nll_fused(x[N,H], weight[V,H], bias[V]|None, labels[N] i64, coef[N] f32,
                 chunk_size, needs_grad) -> (nll[N] f32, grad_x, grad_weight, grad_bias)
    nll[t] = logsumexp(W x_t + b) - (W x_t + b)[labels[t]], and 0 where labels[t] < 0.
    needs_grad = (for x, for weight, for bias): each requested gradient of
    L = sum_t coef[t] * nll[t] comes back in the dtype of its input, the others as None
    (bias grad None when bias is None). Never holds more than chunk_size x V logits.
default_chunk_size(n_tokens, vocab) -> the chunk_size linear_nll passes when none is given.
"""

from __future__ import annotations

import torch

from fastunlearn.ops.chunked import chunked_linear_nll, default_chunk_size  # noqa: F401  (contract)


def pool_forward(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    pooled = torch.einsum("bt,btd->bd", weights, hidden.float())
    return pooled.to(hidden.dtype)


def pool_backward(
    grad_pooled: torch.Tensor, weights: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    return (weights[:, :, None] * grad_pooled.float()[:, None, :]).to(dtype)


def _unit(v: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    norm = v.norm(dim=-1, keepdim=True).clamp_min(eps)
    return v / norm, norm


def npair_forward(anchor, cand, cand_mask, inv_temperature, cosine, eps):
    a, c = anchor.float(), cand.float()
    if cosine:
        a, _ = _unit(a, eps)
        c, _ = _unit(c, eps)
    logits = torch.einsum("bd,bkd->bk", a, c) * inv_temperature
    logits = logits.masked_fill(~cand_mask, float("-inf"))
    loss = torch.logsumexp(logits, dim=1) - logits[:, 0]
    return loss, logits


def _unit_backward(grad_unit, unit, norm, eps):
    # d(v / max(|v|, eps)): project out the radial part only where the norm was not clamped.
    radial = unit * (unit * grad_unit).sum(-1, keepdim=True)
    return torch.where(norm > eps, grad_unit - radial, grad_unit) / norm


def npair_backward(grad_loss, anchor, cand, cand_mask, logits, inv_temperature, cosine, eps):
    probs = torch.softmax(logits, dim=1)
    grad_logits = probs
    grad_logits[:, 0] -= 1.0
    grad_sim = grad_logits * (grad_loss[:, None] * inv_temperature)
    a, c = anchor.float(), cand.float()
    if cosine:
        a, a_norm = _unit(a, eps)
        c, c_norm = _unit(c, eps)
    grad_a = torch.einsum("bk,bkd->bd", grad_sim, c)
    grad_c = grad_sim[:, :, None] * a[:, None, :]
    if cosine:
        grad_a = _unit_backward(grad_a, a, a_norm, eps)
        grad_c = _unit_backward(grad_c, c, c_norm, eps)
    return grad_a.to(anchor.dtype), grad_c.to(cand.dtype)


def nll_chunk(
    logits: torch.Tensor, labels: torch.Tensor, coef: torch.Tensor | None
) -> torch.Tensor:
    """Per-token NLL of one chunk; with ``coef``, overwrite ``logits`` with dL/dlogits."""
    logits32 = logits.float()
    lse = torch.logsumexp(logits32, dim=1)
    valid = labels >= 0
    safe_labels = labels.clamp_min(0)
    target = logits32.gather(1, safe_labels[:, None]).squeeze(1)
    nll = torch.where(valid, lse - target, torch.zeros_like(lse))
    if coef is not None:
        grad = torch.exp(logits32 - lse[:, None])
        grad.scatter_add_(1, safe_labels[:, None], -valid[:, None].to(grad.dtype))
        grad *= torch.where(valid, coef, torch.zeros_like(coef))[:, None]
        logits.copy_(grad)
    return nll


def linear_nll_fused(x, weight, bias, labels, coef, chunk_size, needs_grad):
    return chunked_linear_nll(x, weight, bias, labels, coef, chunk_size, needs_grad, nll_chunk)
