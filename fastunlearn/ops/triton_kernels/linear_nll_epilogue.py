"""Linear + NLL with the softmax folded into Triton matmul epilogues (opt-in, see backends.md).

Selected with ``FASTUNLEARN_LINEAR_NLL_KERNEL`` (read once, when
``fastunlearn.ops.triton_kernels.linear_nll`` is imported):

* ``cublas`` (default): ``linear_nll.py``, cuBLAS logits blocks plus row kernels, 8NHV.
* ``epilogue``: :func:`linear_nll_fused` here, two passes, 8NHV.
* ``epilogue-single``: :func:`linear_nll_single_pass` here, one pass over a bounded logits
  workspace, 6NHV.

Same contract as every ``linear_nll_fused`` (``torch_kernels.py``): ``(x[N,H], weight[V,H],
bias[V] | None, labels[N] (-1: not counted), coef[N] fp32, chunk_size, needs_grad)`` ->
``(nll[N] fp32, grad_x, grad_w, grad_b)``.

Two-pass design (``epilogue``), per chunk of C tokens:

1. ``_lse_partials_kernel``: one tiled GEMM over the whole [C, V] logits grid (x_chunk @ W^T,
   fp32 accumulation, + bias). Its epilogue reduces each [BLOCK_M, BLOCK_N] tile to per-row
   (max, sum of exp(logit - max)) and writes them to an fp32 [C, n_vtiles] workspace; the
   one tile holding a row's label also writes that label's logit. No logit reaches memory.
   Programs walk the row tiles fastest, so a weight tile is reused from L2 by every row
   tile of the chunk and the chunk of x stays in L2.
2. ``_combine_kernel``: one program per row folds its n_vtiles partials into the
   log-sum-exp (the running max starts at -inf and the shift stays finite when a whole
   tile is masked by a -inf bias) and writes ``lse`` and ``nll`` (0 on ignored rows).
3. Per vocabulary block [v0, v1) (``vocab_block`` columns, as in the cuBLAS path):
   ``_grad_tile_kernel`` recomputes the logits tiles and its epilogue writes
   ``g = coef * (exp(logit - lse) - onehot)`` (0 on ignored rows) in x's dtype into the
   [C, Vb] buffer; then two cuBLAS matmuls fold g into grad_x (fp32 [C, H] accumulator) and
   into grad_w[v0:v1] (fp32 inside cuBLAS, rounded once per token chunk), and ``g.sum(0)``
   into grad_b when the bias needs a gradient.

Launches per chunk: 2 + 3 per vocabulary block (+1 per block for grad_b), against
2 x (1 + 1) per block + 3 + 1 per block for the cuBLAS path; the row kernels' extra read and
write of every logits block are gone. FLOPs are unchanged: 8NHV (2NHV twice for the logits,
2NHV each for grad_x and grad_w).

Single-pass design (``epilogue-single``): ``_lse_partials_kernel`` with ``STORE_LOGITS``
also writes each logits tile, rounded to x's dtype, into a [C, V] workspace; after the
combine, ``linear_nll._grad_block_kernel`` turns the workspace into g in place, then
``grad_x[chunk] = g @ W`` (one matmul, inner dimension V) and ``grad_w += g^T @ x_chunk``.
6NHV FLOPs; the workspace is ``C * V`` elements, C chosen so that it stays within
``SINGLE_PASS_WORKSPACE_BYTES`` (1 GiB: 8K tokens x 50272 bf16 logits = 824 MB fit in one
chunk). Its logits are rounded to x's dtype before the softmax of the gradient, as in the
cuBLAS path; the two-pass kernel keeps them in fp32. It trades memory for FLOPs: at 8K tokens
the workspace alone is several times CCE's whole peak, so it suits a memory-rich GPU, not
the memory target of the two-pass kernels. Launches per chunk: 1 GEMM, 1 combine, 1 row
kernel, 2 cuBLAS products (+1 for grad_b).

Accuracy: all arithmetic is fp32 (bf16/fp16 tiles feed tl.dot with an fp32 accumulator;
fp32 tiles use IEEE fp32 products, never TF32). Under ``TRITON_INTERPRET=1`` every tile is
cast to fp32 on load (the interpreter has no bf16 arithmetic).

Left to do, and to measure on a GPU (nothing here has been timed yet):

* tuning: the CUDA configurations below are common Hopper GEMM shapes, autotuned per
  (n_cols, hidden); TMA descriptors / warp specialisation (``tl.make_tensor_descriptor``)
  are the next step if plain ``tl.dot`` tiles trail cuBLAS;
* fusing grad_x and grad_w into the pass-2 GEMM (CCE's design: each program multiplies its
  g tile by W and by x and adds into grad_x / grad_w with fp32 atomics, which needs fp32
  [N, H] and [V, H] accumulators or a split-K reduction; or two kernels reusing g tiles from
  shared memory). That removes the [C, Vb] g buffer and its write + two reads;
* skipping row tiles whose tokens are all ignored (today they are computed and zeroed).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from fastunlearn.ops.triton_kernels.linear_nll import (
    _accumulate_fp32,
    _grad_block_kernel,
    _launch_config,
)

DEFAULT_TOKEN_CHUNK = 2048
BLOCK_BUDGET = 1 << 24  # elements of the [chunk, vocab block] g buffer of pass 2
MIN_VOCAB_BLOCK = 256
PARTIAL_BLOCK_N = 128  # vocabulary tile of pass 1 on CUDA: fixes the partials' width
SINGLE_PASS_WORKSPACE_BYTES = 1 << 30

# Tile sizes on CPU tensors (Triton's interpreter, tests): small, so that the tests' odd
# shapes span several tiles in every dimension.
INTERPRET_CONFIG = dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=16)


def default_chunk_size(n_tokens: int, vocab: int) -> int:
    return max(1, min(n_tokens, DEFAULT_TOKEN_CHUNK))


def single_pass_chunk_size(n_tokens: int, vocab: int, element_size: int = 2) -> int:
    """Tokens whose [chunk, V] logits fit in the single-pass workspace (16-bit by default)."""
    return max(1, min(n_tokens, SINGLE_PASS_WORKSPACE_BYTES // (max(vocab, 1) * element_size)))


def vocab_block(chunk: int, vocab: int) -> int:
    return min(vocab, max(MIN_VOCAB_BLOCK, BLOCK_BUDGET // chunk))


@triton.jit
def _logits_tile(
    x_ptr,
    w_ptr,
    bias_ptr,
    rows,
    cols,
    n_rows,
    n_cols,
    hidden,
    HAS_BIAS: tl.constexpr,
    EVEN_K: tl.constexpr,
    FP32_DOT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """fp32 [BLOCK_M, BLOCK_N] tile of x @ W^T (+ bias); -inf in columns past n_cols."""
    row_ok = rows < n_rows
    col_ok = cols < n_cols
    ks = tl.arange(0, BLOCK_K)
    x_rows = x_ptr + rows[:, None].to(tl.int64) * hidden
    w_cols = w_ptr + cols[None, :].to(tl.int64) * hidden  # W^T[k, n] lives at W + n * H + k
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, hidden, BLOCK_K):
        k = k0 + ks
        if EVEN_K:
            a = tl.load(x_rows + k[None, :], mask=row_ok[:, None], other=0.0)
            b = tl.load(w_cols + k[:, None], mask=col_ok[None, :], other=0.0)
        else:
            k_ok = k < hidden
            a = tl.load(x_rows + k[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(w_cols + k[:, None], mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        if FP32_DOT:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    return tl.where(col_ok[None, :], acc, float("-inf"))


@triton.jit
def _lse_partials_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    labels_ptr,
    max_ptr,
    sum_ptr,
    target_ptr,
    logits_ptr,
    n_rows,
    n_cols,
    hidden,
    n_tiles,
    HAS_BIAS: tl.constexpr,
    EVEN_K: tl.constexpr,
    FP32_DOT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    STORE_LOGITS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """One logits tile -> per-row (max, sum of exp(logit - max)) for this vocabulary tile,
    the label's logit where the label falls in the tile and, with STORE_LOGITS, the tile."""
    pid = tl.program_id(0)
    n_row_tiles = tl.cdiv(n_rows, BLOCK_M)
    # Row tiles fastest: consecutive programs share a weight tile (L2 reuse).
    pid_m = pid % n_row_tiles
    pid_n = pid // n_row_tiles
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    logits = _logits_tile(
        x_ptr,
        w_ptr,
        bias_ptr,
        rows,
        cols,
        n_rows,
        n_cols,
        hidden,
        HAS_BIAS,
        EVEN_K,
        FP32_DOT,
        DOT_PRECISION,
        BLOCK_M,
        BLOCK_N,
        BLOCK_K,
    )
    row_ok = rows < n_rows
    top = tl.max(logits, axis=1)
    # Stays finite when the whole tile is -inf (a bias masking vocabulary, or padding).
    shift = tl.where(top == float("-inf"), 0.0, top)
    total = tl.sum(tl.exp(logits - shift[:, None]), axis=1)
    partial = rows.to(tl.int64) * n_tiles + pid_n
    tl.store(max_ptr + partial, top, mask=row_ok)
    tl.store(sum_ptr + partial, total, mask=row_ok)
    labels = tl.load(labels_ptr + rows, mask=row_ok, other=-1)
    hit = cols[None, :] == labels[:, None]
    label_logit = tl.sum(tl.where(hit, logits, 0.0), axis=1)
    in_tile = row_ok & (labels >= pid_n * BLOCK_N) & (labels < pid_n * BLOCK_N + BLOCK_N)
    tl.store(target_ptr + rows, label_logit, mask=in_tile)
    if STORE_LOGITS:
        offsets = rows[:, None].to(tl.int64) * n_cols + cols[None, :]
        tl.store(
            logits_ptr + offsets,
            logits.to(logits_ptr.dtype.element_ty),
            mask=row_ok[:, None] & (cols[None, :] < n_cols),
        )


@triton.jit
def _combine_kernel(
    max_ptr, sum_ptr, target_ptr, labels_ptr, lse_ptr, nll_ptr, n_tiles, BLOCK_T: tl.constexpr
):
    """One row's vocabulary-tile partials -> its log-sum-exp and NLL (0 where ignored)."""
    row = tl.program_id(0).to(tl.int64)
    label = tl.load(labels_ptr + row)
    top = tl.full((), float("-inf"), tl.float32)
    total = tl.zeros((), tl.float32)
    tiles = tl.arange(0, BLOCK_T)
    for t0 in range(0, n_tiles, BLOCK_T):
        inside = t0 + tiles < n_tiles
        tile_max = tl.load(max_ptr + row * n_tiles + t0 + tiles, mask=inside, other=float("-inf"))
        tile_sum = tl.load(sum_ptr + row * n_tiles + t0 + tiles, mask=inside, other=0.0)
        new_top = tl.maximum(top, tl.max(tile_max, axis=0))
        shift = tl.where(new_top == float("-inf"), 0.0, new_top)
        # A tile's sum is relative to its own max; an all -inf tile has sum 0 and weight
        # exp(-inf - shift) = 0 (shift is finite).
        total = total * tl.exp(top - shift) + tl.sum(tile_sum * tl.exp(tile_max - shift), 0)
        top = new_top
    lse = top + tl.log(total)
    tl.store(lse_ptr + row, lse)
    if label >= 0:
        tl.store(nll_ptr + row, lse - tl.load(target_ptr + row))
    else:
        tl.store(nll_ptr + row, 0.0)


@triton.jit
def _grad_tile_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    labels_ptr,
    lse_ptr,
    coef_ptr,
    out_ptr,
    v_start,
    n_rows,
    n_cols,
    hidden,
    HAS_BIAS: tl.constexpr,
    EVEN_K: tl.constexpr,
    FP32_DOT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """One tile of dL/dlogits = coef * (softmax - onehot(label)) for the vocabulary block
    starting at v_start (w_ptr, bias_ptr already offset), 0 on ignored rows."""
    pid = tl.program_id(0)
    n_row_tiles = tl.cdiv(n_rows, BLOCK_M)
    pid_m = pid % n_row_tiles
    pid_n = pid // n_row_tiles
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    logits = _logits_tile(
        x_ptr,
        w_ptr,
        bias_ptr,
        rows,
        cols,
        n_rows,
        n_cols,
        hidden,
        HAS_BIAS,
        EVEN_K,
        FP32_DOT,
        DOT_PRECISION,
        BLOCK_M,
        BLOCK_N,
        BLOCK_K,
    )
    row_ok = rows < n_rows
    labels = tl.load(labels_ptr + rows, mask=row_ok, other=-1)
    counted = labels >= 0
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    coef = tl.load(coef_ptr + rows, mask=row_ok, other=0.0)
    shift = tl.where(counted, lse, 0.0)  # ignored rows: lse may be -inf, never used
    onehot = tl.where(v_start + cols[None, :] == labels[:, None], 1.0, 0.0)
    grad = coef[:, None] * (tl.exp(logits - shift[:, None]) - onehot)
    grad = tl.where(counted[:, None], grad, 0.0)
    offsets = rows[:, None].to(tl.int64) * n_cols + cols[None, :]
    tl.store(
        out_ptr + offsets,
        grad.to(out_ptr.dtype.element_ty),
        mask=row_ok[:, None] & (cols[None, :] < n_cols),
    )


def _cuda_configs(with_block_n: bool) -> list:
    shapes = [(128, 128, 64, 8, 3), (128, 256, 64, 8, 3), (64, 128, 64, 4, 4), (128, 64, 64, 4, 4)]
    configs = []
    for block_m, block_n, block_k, warps, stages in shapes:
        meta = dict(BLOCK_M=block_m, BLOCK_K=block_k)
        if with_block_n:
            meta["BLOCK_N"] = block_n
        elif block_n != PARTIAL_BLOCK_N:
            continue
        configs.append(triton.Config(meta, num_warps=warps, num_stages=stages))
    return configs


def _even_k(args) -> bool:
    return args["hidden"] % args["BLOCK_K"] == 0


@functools.cache
def _tuned(name: str):
    """The CUDA kernels, autotuned per (n_cols, hidden) and dtypes. Both kernels only write
    what they compute from their inputs, so the autotuner's repeated launches are harmless.
    Built on first use: under the interpreter (CPU tensors) the kernels run untuned."""
    kernel = {"partials": _lse_partials_kernel, "grad": _grad_tile_kernel}[name]
    heuristic = triton.heuristics({"EVEN_K": _even_k})(kernel)
    configs = _cuda_configs(with_block_n=name == "grad")
    return triton.autotune(configs, key=["n_cols", "hidden"])(heuristic)


def _dot_args(x: torch.Tensor) -> dict:
    # IEEE fp32 products for fp32 inputs (torch's matmul default: no TF32); the interpreter has
    # no bf16/fp16 arithmetic, so its tiles are cast to fp32 on load.
    fp32 = x.dtype == torch.float32
    return dict(
        FP32_DOT=fp32 or not x.is_cuda, DOT_PRECISION="ieee" if fp32 or not x.is_cuda else "tf32"
    )


def _partials_block_n(x: torch.Tensor) -> int:
    return PARTIAL_BLOCK_N if x.is_cuda else INTERPRET_CONFIG["BLOCK_N"]


def _launch_partials(x_chunk, weight, bias, labels, tile_max, tile_sum, target, logits):
    rows, hidden = x_chunk.shape
    vocab = weight.shape[0]
    block_n = _partials_block_n(x_chunk)
    n_tiles = triton.cdiv(vocab, block_n)
    args = (
        x_chunk,
        weight,
        bias if bias is not None else x_chunk,
        labels,
        tile_max,
        tile_sum,
        target,
        logits if logits is not None else x_chunk,
        rows,
        vocab,
        hidden,
        n_tiles,
    )
    flags = dict(HAS_BIAS=bias is not None, STORE_LOGITS=logits is not None, **_dot_args(x_chunk))
    if x_chunk.is_cuda:

        def grid(meta):
            return (triton.cdiv(rows, meta["BLOCK_M"]) * n_tiles,)

        _tuned("partials")[grid](*args, BLOCK_N=block_n, **flags)
    else:
        config = INTERPRET_CONFIG
        grid = (triton.cdiv(rows, config["BLOCK_M"]) * n_tiles,)
        _lse_partials_kernel[grid](*args, EVEN_K=hidden % config["BLOCK_K"] == 0, **flags, **config)
    return n_tiles


def _launch_grad(x_chunk, weight_block, bias_block, labels, lse, coef, out, v_start):
    rows, hidden = x_chunk.shape
    n_cols = weight_block.shape[0]
    args = (
        x_chunk,
        weight_block,
        bias_block if bias_block is not None else x_chunk,
        labels,
        lse,
        coef,
        out,
        v_start,
        rows,
        n_cols,
        hidden,
    )
    flags = dict(HAS_BIAS=bias_block is not None, **_dot_args(x_chunk))
    if x_chunk.is_cuda:

        def grid(meta):
            return (triton.cdiv(rows, meta["BLOCK_M"]) * triton.cdiv(n_cols, meta["BLOCK_N"]),)

        _tuned("grad")[grid](*args, **flags)
    else:
        config = INTERPRET_CONFIG
        grid = (triton.cdiv(rows, config["BLOCK_M"]) * triton.cdiv(n_cols, config["BLOCK_N"]),)
        _grad_tile_kernel[grid](*args, EVEN_K=hidden % config["BLOCK_K"] == 0, **flags, **config)


def _log_sum_exp(x_chunk, weight, bias, labels, workspace, nll, logits=None) -> torch.Tensor:
    """Pass 1 over one chunk: writes nll, returns the fp32 [rows] log-sum-exp."""
    rows = x_chunk.shape[0]
    tile_max, tile_sum, target, lse = workspace
    n_tiles = triton.cdiv(weight.shape[0], _partials_block_n(x_chunk))
    tile_max, tile_sum = tile_max[: rows * n_tiles], tile_sum[: rows * n_tiles]
    target, lse = target[:rows], lse[:rows]
    _launch_partials(x_chunk, weight, bias, labels, tile_max, tile_sum, target, logits)
    block_t = min(triton.next_power_of_2(n_tiles), 1024)
    _combine_kernel[(rows,)](tile_max, tile_sum, target, labels, lse, nll, n_tiles, BLOCK_T=block_t)
    return lse


def _workspace(chunk: int, x: torch.Tensor, vocab: int):
    n_tiles = triton.cdiv(vocab, _partials_block_n(x))
    f32 = dict(dtype=torch.float32, device=x.device)
    return (
        torch.empty(chunk * n_tiles, **f32),  # per (row, vocabulary tile) max
        torch.empty(chunk * n_tiles, **f32),  # per (row, vocabulary tile) sum of exp
        torch.zeros(chunk, **f32),  # label logit (written by the label's tile only)
        torch.empty(chunk, **f32),  # log-sum-exp
    )


def _outputs(x, weight, bias, needs_grad):
    n_tokens = x.shape[0]
    need_x, need_w, need_b = needs_grad
    need_b = need_b and bias is not None
    nll = torch.empty(n_tokens, dtype=torch.float32, device=x.device)
    grad_x = torch.empty_like(x) if need_x else None
    grad_w = None
    if need_w:
        # The first chunk's matmul overwrites grad_w; with no token there is no first chunk.
        grad_w = torch.empty_like(weight) if n_tokens > 0 else torch.zeros_like(weight)
    grad_b32 = (
        torch.zeros(weight.shape[0], dtype=torch.float32, device=x.device) if need_b else None
    )
    return nll, grad_x, grad_w, grad_b32


def _add_grad_w(grad_w, grad_logits, x_chunk, first: bool) -> None:
    if first:
        torch.mm(grad_logits.t(), x_chunk, out=grad_w)
    elif grad_w.is_cuda or grad_w.dtype == torch.float32:  # cuBLAS adds in fp32, rounds once
        grad_w.addmm_(grad_logits.t(), x_chunk)
    else:  # CPU tensors (the interpreter, in tests): the same rounding, spelled out
        grad_w.copy_(grad_w.float().addmm_(grad_logits.t().float(), x_chunk.float()))


def linear_nll_fused(x, weight, bias, labels, coef, chunk_size, needs_grad):
    """Two passes per token chunk, the softmax in matmul epilogues (module docstring)."""
    n_tokens, hidden = x.shape
    vocab = weight.shape[0]
    nll, grad_x, grad_w, grad_b32 = _outputs(x, weight, bias, needs_grad)
    if n_tokens == 0:
        return nll, grad_x, grad_w, None if grad_b32 is None else grad_b32.to(bias.dtype)
    chunk = min(chunk_size, n_tokens)
    workspace = _workspace(chunk, x, vocab)
    block_v = vocab_block(chunk_size, vocab)
    compute_grads = grad_x is not None or grad_w is not None or grad_b32 is not None
    buffer = torch.empty(chunk * block_v, dtype=x.dtype, device=x.device) if compute_grads else None
    grad_x32 = None
    if grad_x is not None and x.dtype != torch.float32:
        grad_x32 = torch.empty(chunk, hidden, dtype=torch.float32, device=x.device)
    for start in range(0, n_tokens, chunk_size):
        stop = min(start + chunk_size, n_tokens)
        rows = stop - start
        x_chunk, chunk_labels = x[start:stop], labels[start:stop]
        lse = _log_sum_exp(x_chunk, weight, bias, chunk_labels, workspace, nll[start:stop])
        if not compute_grads:
            continue
        if grad_x is not None:
            accumulator = grad_x[start:stop] if grad_x32 is None else grad_x32[:rows]
            accumulator.zero_()
        chunk_coef = coef[start:stop]
        for v0 in range(0, vocab, block_v):
            v1 = min(v0 + block_v, vocab)
            grad_logits = buffer[: rows * (v1 - v0)].view(rows, v1 - v0)
            _launch_grad(
                x_chunk,
                weight[v0:v1],
                None if bias is None else bias[v0:v1],
                chunk_labels,
                lse,
                chunk_coef,
                grad_logits,
                v0,
            )
            if grad_x is not None:
                _accumulate_fp32(accumulator, grad_logits, weight[v0:v1])
            if grad_w is not None:
                _add_grad_w(grad_w[v0:v1], grad_logits, x_chunk, first=start == 0)
            if grad_b32 is not None:
                grad_b32[v0:v1] += grad_logits.sum(0, dtype=torch.float32)
        if grad_x32 is not None:
            grad_x[start:stop].copy_(grad_x32[:rows])
    grad_b = grad_b32.to(bias.dtype) if grad_b32 is not None else None
    return nll, grad_x, grad_w, grad_b


def linear_nll_single_pass(x, weight, bias, labels, coef, chunk_size, needs_grad):
    """One pass per token chunk over a [chunk, V] logits workspace (module docstring): 6NHV.

    The chunk is ``chunk_size`` capped so that the workspace stays within
    ``SINGLE_PASS_WORKSPACE_BYTES``."""
    n_tokens, _ = x.shape
    vocab = weight.shape[0]
    nll, grad_x, grad_w, grad_b32 = _outputs(x, weight, bias, needs_grad)
    if n_tokens == 0:
        return nll, grad_x, grad_w, None if grad_b32 is None else grad_b32.to(bias.dtype)
    compute_grads = grad_x is not None or grad_w is not None or grad_b32 is not None
    chunk_size = min(chunk_size, single_pass_chunk_size(n_tokens, vocab, x.element_size()))
    chunk = min(chunk_size, n_tokens)
    workspace = _workspace(chunk, x, vocab)
    logits_buffer = (
        torch.empty(chunk * vocab, dtype=x.dtype, device=x.device) if compute_grads else None
    )
    for start in range(0, n_tokens, chunk_size):
        stop = min(start + chunk_size, n_tokens)
        rows = stop - start
        x_chunk, chunk_labels = x[start:stop], labels[start:stop]
        logits = None if logits_buffer is None else logits_buffer[: rows * vocab].view(rows, vocab)
        lse = _log_sum_exp(x_chunk, weight, bias, chunk_labels, workspace, nll[start:stop], logits)
        if not compute_grads:
            continue
        _grad_block_kernel[(rows,)](
            logits, chunk_labels, lse, coef[start:stop], 0, vocab, **_launch_config(vocab)
        )
        if grad_x is not None:
            if x.is_cuda or x.dtype == torch.float32:  # cuBLAS: fp32 accumulation, one rounding
                torch.mm(logits, weight, out=grad_x[start:stop])
            else:
                grad_x[start:stop].copy_(logits.float() @ weight.float())
        if grad_w is not None:
            _add_grad_w(grad_w, logits, x_chunk, first=start == 0)
        if grad_b32 is not None:
            grad_b32 += logits.sum(0, dtype=torch.float32)
    grad_b = grad_b32.to(bias.dtype) if grad_b32 is not None else None
    return nll, grad_x, grad_w, grad_b
