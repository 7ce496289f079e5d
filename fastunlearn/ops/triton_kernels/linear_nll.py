"""Linear + NLL for CUDA: token chunks, each swept over the vocabulary in blocks, twice.

Per chunk of C tokens, pass 1 computes the logits one [C, Vb] block at a time (cuBLAS) and a
row kernel folds each block into a running max and rescaled sum: the log-sum-exp. Pass 2
recomputes each block, a second kernel turns it in place into dL/dlogits, and two matmuls
fold it into grad_x (an fp32 [C, H] accumulator) and into that block's rows of grad_weight.

Against the one-pass loop of the torch backend (``chunked.py``) this costs 2NHV more FLOPs
(8NHV in all) and buys what a GPU needs: every matmul has a large inner dimension (H, C or Vb,
never a chunk of a few hundred tokens), grad_weight is written in the weight's dtype straight
from an fp32 cuBLAS accumulation (no fp32 [V, H] buffer, no extra pass over it per chunk), and
the working memory is a [C, Vb] block plus the [C, H] accumulator. grad_weight is rounded to
the weight's dtype once per token chunk of 2048 (the default).
"""

from __future__ import annotations

import importlib
import os

import torch
import triton
import triton.language as tl

# Measured on an H100 at H=2048, V=50272, 4K-32K bf16 tokens (benchmarks/RESULTS.md): chunks of
# 2048 tokens and blocks of 8192 columns were as fast as any larger choice, at the least memory.
DEFAULT_TOKEN_CHUNK = 2048
BLOCK_BUDGET = 1 << 24  # elements of the one [chunk, vocab block] logits buffer (32 MiB in bf16)
_MIN_VOCAB_BLOCK = 256  # narrower blocks make the matmuls launch-bound
_MAX_ROW_BLOCK = 4096  # columns a program holds at once


# Opt-in kernels (docs/backends.md), chosen once, at import: "cublas" is this file's path;
# "epilogue" and "epilogue-single" are in linear_nll_epilogue.py.
KERNEL_ENV = "FASTUNLEARN_LINEAR_NLL_KERNEL"
KERNELS = ("cublas", "epilogue", "epilogue-single")
KERNEL = os.environ.get(KERNEL_ENV) or "cublas"
if KERNEL not in KERNELS:
    raise ValueError(f"{KERNEL_ENV}={KERNEL!r} is not one of {KERNELS}")


def _epilogue_module():
    return importlib.import_module("fastunlearn.ops.triton_kernels.linear_nll_epilogue")


def default_chunk_size(n_tokens: int, vocab: int) -> int:
    if KERNEL == "epilogue-single":
        return _epilogue_module().single_pass_chunk_size(n_tokens, vocab)
    return max(1, min(n_tokens, DEFAULT_TOKEN_CHUNK))


def vocab_block(chunk: int, vocab: int) -> int:
    return min(vocab, max(_MIN_VOCAB_BLOCK, BLOCK_BUDGET // chunk))


@triton.jit
def _lse_block_kernel(
    logits_ptr, labels_ptr, max_ptr, sum_ptr, target_ptr, v_start, n_cols, BLOCK: tl.constexpr
):
    """Folds one row of a logits block into the row's running (max, sum of exp(x - max)) and,
    when the row's label falls in this block, records the label's logit."""
    row = tl.program_id(0).to(tl.int64)
    label = tl.load(labels_ptr + row)
    # Ignored tokens (prompt, padding) are often most of a batch: skip their softmax entirely.
    if label >= 0:
        base = logits_ptr + row * n_cols
        cols = tl.arange(0, BLOCK)
        top = tl.load(max_ptr + row)
        total = tl.load(sum_ptr + row)
        for c0 in range(0, n_cols, BLOCK):
            x = tl.load(base + c0 + cols, mask=c0 + cols < n_cols, other=float("-inf"))
            x = x.to(tl.float32)
            new_top = tl.maximum(top, tl.max(x, axis=0))
            # Stays finite when every logit so far is -inf (e.g. a bias masking vocabulary).
            shift = tl.where(new_top == float("-inf"), 0.0, new_top)
            total = total * tl.exp(top - shift) + tl.sum(tl.exp(x - shift), axis=0)
            top = new_top
        tl.store(max_ptr + row, top)
        tl.store(sum_ptr + row, total)
        local = label - v_start
        if (local >= 0) & (local < n_cols):
            tl.store(target_ptr + row, tl.load(base + local).to(tl.float32))


@triton.jit
def _grad_block_kernel(
    logits_ptr, labels_ptr, lse_ptr, coef_ptr, v_start, n_cols, BLOCK: tl.constexpr
):
    """Overwrites one row of a logits block with coef * (softmax - onehot(label))."""
    row = tl.program_id(0).to(tl.int64)
    label = tl.load(labels_ptr + row)
    base = logits_ptr + row * n_cols
    cols = tl.arange(0, BLOCK)
    if label >= 0:
        lse = tl.load(lse_ptr + row)
        coef = tl.load(coef_ptr + row)
        for c0 in range(0, n_cols, BLOCK):
            inside = c0 + cols < n_cols
            x = tl.load(base + c0 + cols, mask=inside, other=0.0).to(tl.float32)
            onehot = tl.where(v_start + c0 + cols == label, 1.0, 0.0)
            grad = coef * (tl.exp(x - lse) - onehot)
            tl.store(base + c0 + cols, grad.to(logits_ptr.dtype.element_ty), mask=inside)
    else:
        for c0 in range(0, n_cols, BLOCK):
            zeros = tl.zeros((BLOCK,), dtype=logits_ptr.dtype.element_ty)
            tl.store(base + c0 + cols, zeros, mask=c0 + cols < n_cols)


def _launch_config(n_cols: int) -> dict:
    block = min(triton.next_power_of_2(n_cols), _MAX_ROW_BLOCK)
    return dict(BLOCK=block, num_warps=min(16, max(4, block // 256)))


def _block_logits(x_chunk, weight, bias, v0, v1, buffer) -> torch.Tensor:
    """logits[:, v0:v1] of a chunk, computed into the front of ``buffer``."""
    logits = buffer[: x_chunk.shape[0] * (v1 - v0)].view(x_chunk.shape[0], v1 - v0)
    if bias is None:
        return torch.mm(x_chunk, weight[v0:v1].t(), out=logits)
    return torch.addmm(bias[v0:v1], x_chunk, weight[v0:v1].t(), out=logits)


def _accumulate_fp32(accumulator, a, b) -> None:
    """accumulator (fp32) += a @ b, the product accumulated in fp32 whatever a's dtype."""
    if a.dtype == torch.float32:
        accumulator.addmm_(a, b)
    elif accumulator.is_cuda:
        # cuBLAS reads and writes the fp32 accumulator directly: no low-precision temporary.
        torch.addmm(accumulator, a, b, out_dtype=torch.float32, out=accumulator)
    else:  # CPU tensors reach here only through Triton's interpreter, in tests
        accumulator.addmm_(a.float(), b.float())


def linear_nll_fused(x, weight, bias, labels, coef, chunk_size, needs_grad):
    if KERNEL != "cublas":
        module = _epilogue_module()
        fused = module.linear_nll_fused if KERNEL == "epilogue" else module.linear_nll_single_pass
        return fused(x, weight, bias, labels, coef, chunk_size, needs_grad)
    n_tokens, hidden = x.shape
    vocab = weight.shape[0]
    need_x, need_w, need_b = needs_grad
    need_b = need_b and bias is not None
    block_v = vocab_block(chunk_size, vocab)
    buffer = torch.empty(min(chunk_size, n_tokens) * block_v, dtype=x.dtype, device=x.device)
    nll = torch.empty(n_tokens, dtype=torch.float32, device=x.device)
    grad_x = torch.empty_like(x) if need_x else None
    grad_w = None
    if need_w:
        # The first chunk's matmul overwrites grad_w; with no token there is no first chunk.
        grad_w = torch.empty_like(weight) if n_tokens > 0 else torch.zeros_like(weight)
    grad_b32 = torch.zeros(vocab, dtype=torch.float32, device=x.device) if need_b else None
    # fp32 grad_x accumulates in place; other dtypes through one fp32 chunk buffer.
    grad_x32 = None
    if need_x and x.dtype != torch.float32:
        grad_x32 = torch.empty(
            min(chunk_size, n_tokens), hidden, dtype=torch.float32, device=x.device
        )
    # Per-token running max, sum of exp(logit - max) and label logit, set up once for all chunks.
    all_max = torch.full((n_tokens,), float("-inf"), dtype=torch.float32, device=x.device)
    all_sum = torch.zeros(n_tokens, dtype=torch.float32, device=x.device)
    all_target = torch.zeros(n_tokens, dtype=torch.float32, device=x.device)
    for start in range(0, n_tokens, chunk_size):
        stop = min(start + chunk_size, n_tokens)
        rows = stop - start
        x_chunk, chunk_labels = x[start:stop], labels[start:stop]
        running_max, running_sum, target = (
            all_max[start:stop],
            all_sum[start:stop],
            all_target[start:stop],
        )
        for v0 in range(0, vocab, block_v):
            v1 = min(v0 + block_v, vocab)
            logits = _block_logits(x_chunk, weight, bias, v0, v1, buffer)
            _lse_block_kernel[(rows,)](
                logits,
                chunk_labels,
                running_max,
                running_sum,
                target,
                v0,
                v1 - v0,
                **_launch_config(v1 - v0),
            )
        lse = running_max + torch.log(running_sum)  # -inf + log 0 on ignored rows: masked next
        nll[start:stop] = torch.where(chunk_labels >= 0, lse - target, 0.0)
        if not (need_x or need_w or need_b):
            continue
        if need_x:
            accumulator = grad_x[start:stop] if grad_x32 is None else grad_x32[:rows]
            accumulator.zero_()
        chunk_coef = coef[start:stop]
        for v0 in range(0, vocab, block_v):
            v1 = min(v0 + block_v, vocab)
            grad_logits = _block_logits(x_chunk, weight, bias, v0, v1, buffer)
            _grad_block_kernel[(rows,)](
                grad_logits, chunk_labels, lse, chunk_coef, v0, v1 - v0, **_launch_config(v1 - v0)
            )
            if need_x:
                _accumulate_fp32(accumulator, grad_logits, weight[v0:v1])
            if need_w:
                if start == 0:
                    torch.mm(grad_logits.t(), x_chunk, out=grad_w[v0:v1])
                else:  # cuBLAS adds in fp32 and rounds once per chunk
                    grad_w[v0:v1].addmm_(grad_logits.t(), x_chunk)
            if need_b:
                grad_b32[v0:v1] += grad_logits.sum(0, dtype=torch.float32)
        if grad_x32 is not None:
            grad_x[start:stop].copy_(grad_x32[:rows])
    grad_b = grad_b32.to(bias.dtype) if need_b else None
    return nll, grad_x, grad_w, grad_b
