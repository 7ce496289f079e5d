"""The token-chunked linear + NLL loop shared by the torch and Triton backends.

Per chunk of tokens: logits = x_c W^T (+ b) through the BLAS matmul, then a row kernel
turns them, in place, into per-token NLL and dL/dlogits, and two more matmuls fold that into
grad_x and the fp32 grad_weight accumulator. Only one [chunk, V] buffer ever exists.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# (logits[C,V] (overwritten with dL/dlogits when coef is given), labels[C], coef[C] | None)
#   -> nll[C] f32
ChunkKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]

LOGITS_BUDGET = 1 << 24  # elements of the one [chunk, V] buffer (64 MiB in fp32)


def default_chunk_size(n_tokens: int, vocab: int) -> int:
    return max(1, min(n_tokens, LOGITS_BUDGET // max(vocab, 1)))


def chunked_linear_nll(
    x, weight, bias, labels, coef, chunk_size, needs_grad, chunk_kernel: ChunkKernel
):
    n_tokens = x.shape[0]
    need_x, need_w, need_b = needs_grad
    compute_grads = need_x or need_w or (need_b and bias is not None)
    nll = torch.empty(n_tokens, dtype=torch.float32, device=x.device)
    grad_x = torch.empty_like(x) if need_x else None
    grad_w32 = torch.zeros(weight.shape, dtype=torch.float32, device=x.device) if need_w else None
    grad_b32 = (
        torch.zeros(bias.shape, dtype=torch.float32, device=x.device)
        if need_b and bias is not None
        else None
    )
    for start in range(0, n_tokens, chunk_size):
        stop = min(start + chunk_size, n_tokens)
        x_chunk = x[start:stop]
        logits = x_chunk @ weight.t()
        if bias is not None:
            logits += bias
        chunk_coef = coef[start:stop] if compute_grads else None
        nll[start:stop] = chunk_kernel(logits, labels[start:stop], chunk_coef)
        if not compute_grads:
            continue
        grad_logits = logits  # the kernel overwrote it in place
        if grad_x is not None:
            torch.mm(grad_logits, weight, out=grad_x[start:stop])
        if grad_w32 is not None:
            if grad_logits.dtype == torch.float32:
                grad_w32.addmm_(grad_logits.t(), x_chunk)
            else:
                grad_w32 += grad_logits.t() @ x_chunk
        if grad_b32 is not None:
            grad_b32 += grad_logits.sum(0, dtype=torch.float32)
    grad_w = grad_w32.to(weight.dtype) if grad_w32 is not None else None
    grad_b = grad_b32.to(bias.dtype) if grad_b32 is not None else None
    return nll, grad_x, grad_w, grad_b
