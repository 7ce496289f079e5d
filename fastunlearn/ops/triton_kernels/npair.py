"""N-pair loss: one program per row holds its K candidate dot products and norms."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Elements of the [BLOCK_K, BLOCK_D] candidate tile (8 warps). Tall tiles (K > 16) need more
# registers per element: beyond 4096 elements the sm_90 backward spills.
_TILE = 8192
_TALL_TILE = 4096


@triton.jit
def _load_tile(anchor_ptr, cand_ptr, row, d0, K, D, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    ks = tl.arange(0, BLOCK_K)
    cols = d0 + tl.arange(0, BLOCK_D)
    col_in = cols < D
    a = tl.load(anchor_ptr + row * D + cols, mask=col_in, other=0.0).to(tl.float32)
    c_offs = (row * K + ks[:, None]) * D + cols[None, :]
    c = tl.load(cand_ptr + c_offs, mask=(ks < K)[:, None] & col_in[None, :], other=0.0).to(
        tl.float32
    )
    return a, c


@triton.jit
def _npair_fwd_kernel(
    anchor_ptr,
    cand_ptr,
    mask_ptr,
    loss_ptr,
    logits_ptr,
    K,
    D,
    inv_temperature,
    eps,
    COSINE: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    ks = tl.arange(0, BLOCK_K)
    k_in = ks < K
    dot = tl.zeros((BLOCK_K,), dtype=tl.float32)
    c_sq = tl.zeros((BLOCK_K,), dtype=tl.float32)
    a_sq = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        a, c = _load_tile(anchor_ptr, cand_ptr, row, d0, K, D, BLOCK_K, BLOCK_D)
        dot += tl.sum(c * a[None, :], axis=1)
        if COSINE:
            c_sq += tl.sum(c * c, axis=1)
            a_sq += a * a
    sim = dot
    if COSINE:
        sim = dot / (
            tl.maximum(tl.sqrt(tl.sum(a_sq, axis=0)), eps) * tl.maximum(tl.sqrt(c_sq), eps)
        )
    keep = tl.load(mask_ptr + row * K + ks, mask=k_in, other=0) != 0
    logits = tl.where(keep, sim * inv_temperature, float("-inf"))
    # Column 0 is always kept, so the max is finite.
    top = tl.max(logits, axis=0)
    lse = top + tl.log(tl.sum(tl.exp(logits - top), axis=0))
    positive = tl.sum(tl.where(ks == 0, logits, 0.0), axis=0)
    tl.store(logits_ptr + row * K + ks, logits, mask=k_in)
    tl.store(loss_ptr + row, lse - positive)


@triton.jit
def _store_grads(
    grad_a_ptr,
    grad_c_ptr,
    row,
    d0,
    K,
    D,
    a,
    c,
    alpha,
    beta,
    gamma,
    delta,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # grad_c[k] = alpha_k a - beta_k c_k,  grad_a = sum_k gamma_k c_k - delta a.
    ks = tl.arange(0, BLOCK_K)
    cols = d0 + tl.arange(0, BLOCK_D)
    col_in = cols < D
    grad_a = tl.sum(gamma[:, None] * c, axis=0) - delta * a
    grad_c = alpha[:, None] * a[None, :] - beta[:, None] * c
    tl.store(grad_a_ptr + row * D + cols, grad_a.to(grad_a_ptr.dtype.element_ty), mask=col_in)
    c_offs = (row * K + ks[:, None]) * D + cols[None, :]
    tl.store(
        grad_c_ptr + c_offs,
        grad_c.to(grad_c_ptr.dtype.element_ty),
        mask=(ks < K)[:, None] & col_in[None, :],
    )


@triton.jit
def _npair_bwd_kernel(
    grad_loss_ptr,
    anchor_ptr,
    cand_ptr,
    logits_ptr,
    grad_a_ptr,
    grad_c_ptr,
    K,
    D,
    inv_temperature,
    eps,
    COSINE: tl.constexpr,
    SINGLE_BLOCK: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    ks = tl.arange(0, BLOCK_K)
    k_in = ks < K
    # Masked candidates saved -inf logits, hence zero probability and zero gradient.
    logits = tl.load(logits_ptr + row * K + ks, mask=k_in, other=float("-inf"))
    p = tl.exp(logits - tl.max(logits, axis=0))
    p = p / tl.sum(p, axis=0)
    grad_sim = (p - tl.where(ks == 0, 1.0, 0.0)) * (tl.load(grad_loss_ptr + row) * inv_temperature)

    dot = tl.zeros((BLOCK_K,), dtype=tl.float32)
    c_sq = tl.zeros((BLOCK_K,), dtype=tl.float32)
    a_sq = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if SINGLE_BLOCK:
        # The row fits one tile: keep it in registers instead of reading it twice.
        a, c = _load_tile(anchor_ptr, cand_ptr, row, 0, K, D, BLOCK_K, BLOCK_D)
        if COSINE:
            dot = tl.sum(c * a[None, :], axis=1)
            c_sq = tl.sum(c * c, axis=1)
            a_sq = a * a
    elif COSINE:
        for d0 in range(0, D, BLOCK_D):
            a, c = _load_tile(anchor_ptr, cand_ptr, row, d0, K, D, BLOCK_K, BLOCK_D)
            dot += tl.sum(c * a[None, :], axis=1)
            c_sq += tl.sum(c * c, axis=1)
            a_sq += a * a

    if COSINE:
        # Chain rule through v / max(|v|, eps): no radial term where the norm was clamped.
        a_raw = tl.sqrt(tl.sum(a_sq, axis=0))
        c_raw = tl.sqrt(c_sq)
        a_norm = tl.maximum(a_raw, eps)
        c_norm = tl.maximum(c_raw, eps)
        cos = dot / (a_norm * c_norm)
        alpha = grad_sim / (c_norm * a_norm)
        beta = tl.where(c_raw > eps, grad_sim * cos / (c_norm * c_norm), 0.0)
        gamma = alpha
        delta = tl.where(a_raw > eps, tl.sum(grad_sim * cos, axis=0) / (a_norm * a_norm), 0.0)
    else:
        alpha = grad_sim
        beta = tl.zeros((BLOCK_K,), dtype=tl.float32)
        gamma = grad_sim
        delta = 0.0

    if SINGLE_BLOCK:
        _store_grads(
            grad_a_ptr, grad_c_ptr, row, 0, K, D, a, c, alpha, beta, gamma, delta, BLOCK_K, BLOCK_D
        )
    else:
        for d0 in range(0, D, BLOCK_D):
            a, c = _load_tile(anchor_ptr, cand_ptr, row, d0, K, D, BLOCK_K, BLOCK_D)
            _store_grads(
                grad_a_ptr,
                grad_c_ptr,
                row,
                d0,
                K,
                D,
                a,
                c,
                alpha,
                beta,
                gamma,
                delta,
                BLOCK_K,
                BLOCK_D,
            )


def _blocks(num_cand: int, dim: int) -> tuple[int, int, int]:
    block_k = triton.next_power_of_2(num_cand)
    tile = _TILE if block_k <= 16 else _TALL_TILE
    block_d = min(triton.next_power_of_2(max(dim, 1)), max(16, tile // block_k))
    num_warps = 8 if block_k * block_d >= 4096 else 4
    return block_k, block_d, num_warps


def npair_forward(anchor, cand, cand_mask, inv_temperature, cosine, eps):
    assert anchor.is_contiguous() and cand.is_contiguous() and cand_mask.is_contiguous()
    rows, num_cand, dim = cand.shape
    loss = torch.empty(rows, dtype=torch.float32, device=anchor.device)
    logits = torch.empty((rows, num_cand), dtype=torch.float32, device=anchor.device)
    if rows == 0:
        return loss, logits
    block_k, block_d, num_warps = _blocks(num_cand, dim)
    _npair_fwd_kernel[(rows,)](
        anchor,
        cand,
        cand_mask.view(torch.uint8),
        loss,
        logits,
        num_cand,
        dim,
        inv_temperature,
        eps,
        COSINE=cosine,
        BLOCK_K=block_k,
        BLOCK_D=block_d,
        num_warps=num_warps,
    )
    return loss, logits


def npair_backward(grad_loss, anchor, cand, cand_mask, logits, inv_temperature, cosine, eps):
    assert (
        grad_loss.is_contiguous()
        and anchor.is_contiguous()
        and cand.is_contiguous()
        and logits.is_contiguous()
    )
    rows, num_cand, dim = cand.shape
    grad_anchor = torch.empty_like(anchor)
    grad_cand = torch.empty_like(cand)
    if rows == 0:
        return grad_anchor, grad_cand
    block_k, block_d, num_warps = _blocks(num_cand, dim)
    _npair_bwd_kernel[(rows,)](
        grad_loss,
        anchor,
        cand,
        logits,
        grad_anchor,
        grad_cand,
        num_cand,
        dim,
        inv_temperature,
        eps,
        COSINE=cosine,
        SINGLE_BLOCK=dim <= block_d,
        BLOCK_K=block_k,
        BLOCK_D=block_d,
        num_warps=num_warps,
    )
    return grad_anchor, grad_cand
