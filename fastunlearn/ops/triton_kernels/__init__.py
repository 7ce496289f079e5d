"""Triton implementation of the kernel contract documented in ``fastunlearn.ops.torch_kernels``.

Runs on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1``.
"""

from fastunlearn.ops.triton_kernels.linear_nll import default_chunk_size, linear_nll_fused
from fastunlearn.ops.triton_kernels.npair import npair_backward, npair_forward
from fastunlearn.ops.triton_kernels.pooling import pool_backward, pool_forward

__all__ = [
    "default_chunk_size",
    "linear_nll_fused",
    "npair_backward",
    "npair_forward",
    "pool_backward",
    "pool_forward",
]
