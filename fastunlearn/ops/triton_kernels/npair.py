"""N-pair loss: one program per row holds its K candidate dot products and norms.

The op's path (``npair_forward_reduced`` / ``npair_backward_reduced``) is one launch each way:
the forward also reduces the rows ("mean" / "sum") in the same launch, and the backward reads
the incoming gradient (a scalar, or per row at any stride) itself. ``npair_forward`` /
``npair_backward`` are the per-row kernel contract of ``fastunlearn.ops.torch_kernels``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Elements of the [BLOCK_K, BLOCK_D] candidate tile (8 warps). Tall tiles (K > 16) need more
# registers per element: beyond 4096 elements the sm_90 backward spills.
_TILE = 8192
_TALL_TILE = 4096
# Rows summed per step by the program that reduces "mean" / "sum" in the forward launch.
_SUM_BLOCK = 1024


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
    row_loss_ptr,
    counter_ptr,
    rows,
    K,
    D,
    inv_temperature,
    eps,
    divisor,
    COSINE: tl.constexpr,
    HAS_MASK: tl.constexpr,
    REDUCE: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_B: tl.constexpr,
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
    keep = k_in
    if HAS_MASK:
        # Column 0 (the positive) is kept whatever the mask says: the op checks it on CPU
        # only (a host read elsewhere), and a left-out positive would make the loss infinite.
        keep = keep & ((tl.load(mask_ptr + row * K + ks, mask=k_in, other=0) != 0) | (ks == 0))
    logits = tl.where(keep, sim * inv_temperature, float("-inf"))
    # Column 0 is always kept, so the max is finite.
    top = tl.max(logits, axis=0)
    lse = top + tl.log(tl.sum(tl.exp(logits - top), axis=0))
    positive = tl.sum(tl.where(ks == 0, logits, 0.0), axis=0)
    tl.store(logits_ptr + row * K + ks, logits, mask=k_in)
    if REDUCE:
        # "mean" / "sum" in this launch: every program leaves its row's loss, then counts
        # itself in; the last to arrive sums all rows in row order (the same order whichever
        # program is last: deterministic), divides, and sets the counter back to 0 for the
        # next launch. The barrier and the acq_rel atomic publish the row loss before the count.
        tl.store(row_loss_ptr + row, lse - positive)
        tl.debug_barrier()
        arrived = tl.atomic_add(counter_ptr, 1, sem="acq_rel")
        if arrived == rows - 1:
            total = tl.zeros((BLOCK_B,), dtype=tl.float32)
            for r0 in range(0, rows, BLOCK_B):
                rs = r0 + tl.arange(0, BLOCK_B)
                total += tl.load(row_loss_ptr + rs, mask=rs < rows, other=0.0, cache_modifier=".cg")
            tl.store(loss_ptr, tl.sum(total, axis=0) / divisor)
            tl.atomic_xchg(counter_ptr, 0)
    else:
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
    grad_stride,
    divisor,
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
    # The row's incoming gradient: grad_loss[row] for "none" (any stride), the one scalar
    # (stride 0) for "sum", and that scalar / rows for "mean".
    grad_row = tl.load(grad_loss_ptr + row * grad_stride).to(tl.float32) / divisor
    grad_sim = (p - tl.where(ks == 0, 1.0, 0.0)) * (grad_row * inv_temperature)

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


# One zeroed int32 counter per (device, stream) for the in-launch reduction; each launch leaves
# it at 0. Launches on one stream run in order; another stream gets its own counter.
_COUNTERS: dict[tuple, torch.Tensor] = {}


def _counter(device: torch.device) -> torch.Tensor:
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (device, stream)
    counter = _COUNTERS.get(key)
    if counter is None:  # allocated and zeroed once: later launches need no memset
        counter = _COUNTERS[key] = torch.zeros(1, dtype=torch.int32, device=device)
    return counter


def npair_forward_reduced(anchor, cand, cand_mask, inv_temperature, cosine, eps, reduction):
    """One launch: (loss, logits[B,K] f32). ``reduction`` "mean" / "sum" gives the fp32 scalar
    (0 for B = 0), "none" the per-row losses [B]. ``cand_mask`` may be None (all kept); any
    dtype, nonzero = kept; column 0 is kept whatever it holds."""
    assert anchor.is_contiguous() and cand.is_contiguous()
    assert cand_mask is None or cand_mask.is_contiguous()
    rows, num_cand, dim = cand.shape
    device = anchor.device
    reduce = reduction != "none"
    logits = torch.empty((rows, num_cand), dtype=torch.float32, device=device)
    if rows == 0:
        loss = torch.zeros(() if reduce else (0,), dtype=torch.float32, device=device)
        return loss, logits
    loss = torch.empty(() if reduce else (rows,), dtype=torch.float32, device=device)
    row_loss = torch.empty(rows, dtype=torch.float32, device=device) if reduce else loss
    if cand_mask is not None and cand_mask.dtype == torch.bool:
        cand_mask = cand_mask.view(torch.uint8)  # same bytes; Triton reads bool pointers as int1
    block_k, block_d, num_warps = _blocks(num_cand, dim)
    _npair_fwd_kernel[(rows,)](
        anchor,
        cand,
        logits if cand_mask is None else cand_mask,  # not read without HAS_MASK
        loss,
        logits,
        row_loss,
        _counter(device) if reduce else row_loss,
        rows,
        num_cand,
        dim,
        inv_temperature,
        eps,
        float(rows) if reduction == "mean" else 1.0,
        COSINE=cosine,
        HAS_MASK=cand_mask is not None,
        REDUCE=reduce,
        BLOCK_K=block_k,
        BLOCK_D=block_d,
        BLOCK_B=min(triton.next_power_of_2(rows), _SUM_BLOCK),
        num_warps=num_warps,
    )
    return loss, logits


def npair_backward_reduced(
    grad_loss, anchor, cand, logits, inv_temperature, cosine, eps, reduction
):
    """One launch: (grad_anchor, grad_cand) from the forward's logits. ``grad_loss``: the
    scalar's gradient for "mean" / "sum", else [B] of any stride (an expanded one included)."""
    assert anchor.is_contiguous() and cand.is_contiguous() and logits.is_contiguous()
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
        0 if reduction != "none" else grad_loss.stride(0),
        float(rows) if reduction == "mean" else 1.0,
        COSINE=cosine,
        SINGLE_BLOCK=dim <= block_d,
        BLOCK_K=block_k,
        BLOCK_D=block_d,
        num_warps=num_warps,
    )
    return grad_anchor, grad_cand


def npair_forward(anchor, cand, cand_mask, inv_temperature, cosine, eps):
    assert cand_mask.is_contiguous()
    return npair_forward_reduced(anchor, cand, cand_mask, inv_temperature, cosine, eps, "none")


def npair_backward(grad_loss, anchor, cand, cand_mask, logits, inv_temperature, cosine, eps):
    assert grad_loss.is_contiguous()
    return npair_backward_reduced(
        grad_loss, anchor, cand, logits, inv_temperature, cosine, eps, "none"
    )
