"""Position-weighted pooling: bandwidth-bound weighted reduction over T and its broadcast back.

The op's path (``pool_forward_from_mask`` / ``pool_backward_saved``) builds the position
weights inside the forward kernel from the mask: a running count of the masked-in positions,
carried from one T block to the next, so that forward + backward is two launches with no
host-side weight computation. The forward saves the unnormalised weights w[B,T] and their row
sums (4 bytes a token, against 2-4 * D bytes of hidden states a token) for the backward, which
then keeps its flat [B*T, D] tiling instead of re-deriving running counts per tile.

``pool_forward`` / ``pool_backward`` take normalised weights, as the kernel contract in
``fastunlearn.ops.torch_kernels`` states.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Elements per program tile, over 8 warps: 16 per thread keeps many loads in flight at under
# 80 registers (4 warps need ~125 and halve occupancy).
_TILE = 4096
# Fewer programs than this leaves SMs idle, so the forward narrows its D blocks first.
_MIN_PROGRAMS = 256


@triton.jit
def _pool_fwd_kernel(
    hidden_ptr,
    in_ptr,
    out_ptr,
    weights_ptr,
    totals_ptr,
    T,
    D,
    stride_hb,
    stride_ht,
    stride_hd,
    stride_ib,
    stride_it,
    FROM_MASK: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # FROM_MASK: in_ptr is the mask [B, T] (any dtype; its values are multipliers) and the
    # weights w_t = m_t * (m_0 + ... + m_t) are built here; the program of the first D block
    # writes them (and their row sum) out for the backward. Otherwise in_ptr holds normalised
    # fp32 weights. hidden and in_ptr are read through their strides (a view such as
    # hidden[::k] or an expanded mask needs no copy first); the outputs are contiguous.
    b = tl.program_id(0).to(tl.int64)
    block_d = tl.program_id(1)
    cols = block_d * BLOCK_D + tl.arange(0, BLOCK_D)
    col_in = cols < D
    # Accumulate the whole tile and reduce over T once at the end: no cross-warp reduction per step.
    acc = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
    count = tl.zeros((1,), dtype=tl.float32)  # masked-in positions before this T block
    squares = tl.zeros((BLOCK_T,), dtype=tl.float32)
    # Positions the weights are stored for: the whole row in the first D block, none elsewhere.
    first = 1 - tl.minimum(block_d, 1)
    store_end = T * first
    for t0 in range(0, T, BLOCK_T):
        ts = t0 + tl.arange(0, BLOCK_T)
        t_in = ts < T
        in_offsets = b * stride_ib + ts.to(tl.int64) * stride_it
        if FROM_MASK:
            m = tl.load(in_ptr + in_offsets, mask=t_in, other=0).to(tl.float32)
            w = m * (count + tl.cumsum(m, axis=0))
            count += tl.sum(m, axis=0)
            squares += m * m
            tl.store(weights_ptr + b * T + ts, w, mask=ts < store_end)
        else:
            w = tl.load(in_ptr + in_offsets, mask=t_in, other=0.0)
        h = tl.load(
            hidden_ptr
            + b * stride_hb
            + ts[:, None].to(tl.int64) * stride_ht
            + cols[None, :] * stride_hd,
            mask=t_in[:, None] & col_in[None, :],
            other=0.0,
        )
        acc += w[:, None] * h.to(tl.float32)
    pooled = tl.sum(acc, axis=0)
    if FROM_MASK:
        # sum_t m_t sum_{s<=t} m_s = (S^2 + sum_t m_t^2) / 2 with S = sum_t m_t: n (n + 1) / 2
        # for a 0/1 mask with n positions in. An empty row (total 0) pools to zero.
        total = 0.5 * (count * count + tl.sum(squares, axis=0))  # [1]
        pooled = pooled / tl.where(total > 0, total, 1.0)
        tl.store(totals_ptr + b + tl.arange(0, 1), total, mask=tl.arange(0, 1) < first)
    tl.store(out_ptr + b * D + cols, pooled.to(out_ptr.dtype.element_ty), mask=col_in)


@triton.jit
def _pool_bwd_kernel(
    grad_ptr,
    weights_ptr,
    totals_ptr,
    out_ptr,
    T,
    D,
    rows,
    HAS_TOTALS: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # Rows of the flattened [B*T, D] output, so short sequences still fill whole tiles.
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    r_in = r < rows
    inside = r_in[:, None] & (cols < D)[None, :]
    w = tl.load(weights_ptr + r, mask=r_in, other=0.0)
    if HAS_TOTALS:  # unnormalised weights from the forward kernel, and their row sums
        total = tl.load(totals_ptr + r // T, mask=r_in, other=1.0)
        w = w / tl.where(total > 0, total, 1.0)
    g = tl.load(grad_ptr + (r // T)[:, None] * D + cols[None, :], mask=inside, other=0.0).to(
        tl.float32
    )
    tl.store(
        out_ptr + r[:, None] * D + cols[None, :],
        (w[:, None] * g).to(out_ptr.dtype.element_ty),
        mask=inside,
    )


def _forward(hidden, weights_or_mask, from_mask):
    batch, seq, dim = hidden.shape
    device = hidden.device
    pooled = torch.empty((batch, dim), dtype=hidden.dtype, device=device)
    weights = torch.empty((batch, seq), dtype=torch.float32, device=device) if from_mask else None
    totals = torch.empty((batch,), dtype=torch.float32, device=device) if from_mask else None
    if pooled.numel() == 0:
        # D = 0 with rows to pool: nothing reads the weights (the gradient is empty too).
        return pooled, weights, totals
    block_d = min(triton.next_power_of_2(dim), 512)
    # 64 elements still make a full 128-byte line in 16-bit dtypes.
    while block_d > 64 and batch * triton.cdiv(dim, block_d) < _MIN_PROGRAMS:
        block_d //= 2
    block_t = min(triton.next_power_of_2(max(seq, 1)), max(1, _TILE // block_d))
    _pool_fwd_kernel[(batch, triton.cdiv(dim, block_d))](
        hidden,
        weights_or_mask,
        pooled,
        weights if from_mask else pooled,  # unused without FROM_MASK
        totals if from_mask else pooled,
        seq,
        dim,
        *hidden.stride(),
        *weights_or_mask.stride(),
        FROM_MASK=from_mask,
        BLOCK_T=block_t,
        BLOCK_D=block_d,
        num_warps=8,
    )
    return pooled, weights, totals


def _backward(grad_pooled, weights, totals, dtype):
    batch, seq = weights.shape
    dim = grad_pooled.shape[1]
    grad_hidden = torch.empty((batch, seq, dim), dtype=dtype, device=grad_pooled.device)
    rows = batch * seq
    if grad_hidden.numel() == 0:
        return grad_hidden
    block_d = min(triton.next_power_of_2(dim), 256)
    block_r = min(triton.next_power_of_2(rows), max(1, _TILE // block_d))
    _pool_bwd_kernel[(triton.cdiv(rows, block_r), triton.cdiv(dim, block_d))](
        grad_pooled,
        weights,
        weights if totals is None else totals,
        grad_hidden,
        seq,
        dim,
        rows,
        HAS_TOTALS=totals is not None,
        BLOCK_R=block_r,
        BLOCK_D=block_d,
        num_warps=8,
    )
    return grad_hidden


def pool_forward_from_mask(
    hidden: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One launch: (pooled[B,D] in hidden's dtype, w[B,T] f32 unnormalised, row sums[B] f32).

    w_t = m_t * (m_0 + ... + m_t) from mask[B,T] (any dtype, used as multipliers);
    pooled = sum_t w_t hidden_t / sum_t w_t, and 0 for a row whose weights sum to 0 or less.
    hidden and mask may have any strides (read in place: no copy launch). The weights and
    sums are what ``pool_backward_saved`` takes."""
    assert hidden.dim() == 3 and mask.shape == hidden.shape[:2]
    if mask.dtype == torch.bool:
        mask = mask.view(torch.uint8)  # same bytes; Triton reads bool pointers as int1
    return _forward(hidden, mask, True)


def pool_backward_saved(
    grad_pooled: torch.Tensor, weights: torch.Tensor, totals: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """One launch: grad_hidden[b,t] = weights[b,t] / totals[b] * grad_pooled[b] (0 where the
    row sum is 0), from what ``pool_forward_from_mask`` returned."""
    assert grad_pooled.is_contiguous() and weights.is_contiguous() and totals.is_contiguous()
    return _backward(grad_pooled, weights, totals, dtype)


def pool_forward(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    assert weights.dtype == torch.float32 and weights.shape == hidden.shape[:2]
    return _forward(hidden, weights, False)[0]


def pool_backward(
    grad_pooled: torch.Tensor, weights: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    assert (
        grad_pooled.is_contiguous() and weights.is_contiguous() and weights.dtype == torch.float32
    )
    return _backward(grad_pooled, weights, None, dtype)
