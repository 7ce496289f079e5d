"""Input checks shared by the ops: each raises ValueError naming the offending argument."""

from __future__ import annotations

import torch

# The fused ops compute in fp32 whatever the input; fp64 is for gradcheck on the references.
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_tensor(name: str, value, *, ndim: int | None = None, floating: bool = False) -> None:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(value.shape)}")
    if floating and value.dtype not in KERNEL_DTYPES:
        raise ValueError(
            f"{name} must be a floating tensor (fp32, bf16 or fp16), got {value.dtype}"
        )


def check_same_device(**tensors: torch.Tensor | None) -> None:
    present = {name: t for name, t in tensors.items() if t is not None}
    devices = {t.device for t in present.values()}
    if len(devices) > 1:
        listing = ", ".join(f"{name} on {t.device}" for name, t in present.items())
        raise ValueError(f"tensors must share one device: {listing}")


def check_shape(name: str, value: torch.Tensor, expected: tuple[int, ...], described: str) -> None:
    if tuple(value.shape) != tuple(expected):
        raise ValueError(
            f"{name} must have shape {described} = {tuple(expected)}, got {tuple(value.shape)}"
        )
