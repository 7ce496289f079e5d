"""Position-weighted pooling: bandwidth-bound weighted reduction over T and its broadcast back."""

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
    hidden_ptr, weights_ptr, out_ptr, T, D, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr
):
    b = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_in = cols < D
    # Accumulate the whole tile and reduce over T once at the end: no cross-warp reduction per step.
    acc = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        ts = t0 + tl.arange(0, BLOCK_T)
        t_in = ts < T
        w = tl.load(weights_ptr + b * T + ts, mask=t_in, other=0.0)
        h = tl.load(
            hidden_ptr + (b * T + ts[:, None]) * D + cols[None, :],
            mask=t_in[:, None] & col_in[None, :],
            other=0.0,
        )
        acc += w[:, None] * h.to(tl.float32)
    pooled = tl.sum(acc, axis=0)
    tl.store(out_ptr + b * D + cols, pooled.to(out_ptr.dtype.element_ty), mask=col_in)


@triton.jit
def _pool_bwd_kernel(
    grad_ptr, weights_ptr, out_ptr, T, D, rows, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr
):
    # Rows of the flattened [B*T, D] output, so short sequences still fill whole tiles.
    r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    r_in = r < rows
    inside = r_in[:, None] & (cols < D)[None, :]
    w = tl.load(weights_ptr + r, mask=r_in, other=0.0)
    g = tl.load(grad_ptr + (r // T)[:, None] * D + cols[None, :], mask=inside, other=0.0).to(
        tl.float32
    )
    tl.store(
        out_ptr + r[:, None] * D + cols[None, :],
        (w[:, None] * g).to(out_ptr.dtype.element_ty),
        mask=inside,
    )


def pool_forward(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    assert hidden.is_contiguous() and weights.is_contiguous() and weights.dtype == torch.float32
    batch, seq, dim = hidden.shape
    pooled = torch.empty((batch, dim), dtype=hidden.dtype, device=hidden.device)
    if pooled.numel() == 0:
        return pooled
    block_d = min(triton.next_power_of_2(dim), 512)
    # 64 elements still make a full 128-byte line in 16-bit dtypes.
    while block_d > 64 and batch * triton.cdiv(dim, block_d) < _MIN_PROGRAMS:
        block_d //= 2
    block_t = min(triton.next_power_of_2(max(seq, 1)), max(1, _TILE // block_d))
    _pool_fwd_kernel[(batch, triton.cdiv(dim, block_d))](
        hidden, weights, pooled, seq, dim, BLOCK_T=block_t, BLOCK_D=block_d, num_warps=8
    )
    return pooled


def pool_backward(
    grad_pooled: torch.Tensor, weights: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    assert (
        grad_pooled.is_contiguous() and weights.is_contiguous() and weights.dtype == torch.float32
    )
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
        grad_hidden,
        seq,
        dim,
        rows,
        BLOCK_R=block_r,
        BLOCK_D=block_d,
        num_warps=8,
    )
    return grad_hidden
