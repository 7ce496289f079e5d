"""Linear + NLL: the shared token-chunk loop with a Triton online-softmax row kernel."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastunlearn.ops.chunked import chunked_linear_nll

# Wide V blocks and many warps: a chunk has few rows (budget // V), so each program must keep
# many loads in flight on its own to stream its row at full bandwidth.
_MAX_BLOCK_V = 16384


@triton.jit
def _nll_chunk_kernel(
    logits_ptr, labels_ptr, coef_ptr, nll_ptr, V, HAS_COEF: tl.constexpr, BLOCK_V: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * V
    label = tl.load(labels_ptr + row)
    cols = tl.arange(0, BLOCK_V)
    # Ignored tokens (prompt, padding) are often most of a batch: skip their softmax entirely.
    if label >= 0:
        # Pass 1: running max and rescaled sum, one block of V at a time.
        top = float("-inf")
        total = 0.0
        for v0 in range(0, V, BLOCK_V):
            x = tl.load(base + v0 + cols, mask=v0 + cols < V, other=float("-inf")).to(tl.float32)
            new_top = tl.maximum(top, tl.max(x, axis=0))
            # Stays finite when every logit so far is -inf (e.g. a bias masking vocabulary).
            shift = tl.where(new_top == float("-inf"), 0.0, new_top)
            total = total * tl.exp(top - shift) + tl.sum(tl.exp(x - shift), axis=0)
            top = new_top
        lse = top + tl.log(total)
        tl.store(nll_ptr + row, lse - tl.load(base + label).to(tl.float32))
        if HAS_COEF:
            # Pass 2: overwrite the row with coef * (softmax - onehot(label)).
            coef = tl.load(coef_ptr + row)
            for v0 in range(0, V, BLOCK_V):
                inside = v0 + cols < V
                x = tl.load(base + v0 + cols, mask=inside, other=0.0).to(tl.float32)
                grad = coef * (tl.exp(x - lse) - tl.where(v0 + cols == label, 1.0, 0.0))
                tl.store(base + v0 + cols, grad.to(logits_ptr.dtype.element_ty), mask=inside)
    else:
        tl.store(nll_ptr + row, 0.0)
        if HAS_COEF:
            for v0 in range(0, V, BLOCK_V):
                tl.store(
                    base + v0 + cols,
                    tl.zeros((BLOCK_V,), dtype=logits_ptr.dtype.element_ty),
                    mask=v0 + cols < V,
                )


def nll_chunk(
    logits: torch.Tensor, labels: torch.Tensor, coef: torch.Tensor | None
) -> torch.Tensor:
    """Per-token NLL of one chunk; with ``coef``, overwrite ``logits`` with dL/dlogits."""
    assert (
        logits.is_contiguous() and labels.is_contiguous() and (coef is None or coef.is_contiguous())
    )
    rows, vocab = logits.shape
    nll = torch.empty(rows, dtype=torch.float32, device=logits.device)
    if rows == 0:
        return nll
    block_v = min(triton.next_power_of_2(vocab), _MAX_BLOCK_V)
    num_warps = min(32, max(4, block_v // 512))
    _nll_chunk_kernel[(rows,)](
        logits,
        labels,
        coef if coef is not None else nll,
        nll,
        vocab,
        HAS_COEF=coef is not None,
        BLOCK_V=block_v,
        num_warps=num_warps,
    )
    return nll


def linear_nll_fused(x, weight, bias, labels, coef, chunk_size, needs_grad):
    return chunked_linear_nll(x, weight, bias, labels, coef, chunk_size, needs_grad, nll_chunk)
