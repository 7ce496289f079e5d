"""Input checks shared by the ops: each raises ValueError naming the offending argument."""

from __future__ import annotations

import math
import numbers

import torch

# The fused ops compute in fp32 whatever the input; fp64 is for gradcheck on the references.
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Scalars reach the kernels as fp32: a larger one would turn into inf there.
FP32_MAX = torch.finfo(torch.float32).max


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


def _describe(value) -> str:
    # repr of a tensor or array spans lines; errors stay on one.
    if value is None or isinstance(value, (bool, numbers.Number, str)):
        return repr(value)
    return f"a {type(value).__name__}"


def check_number(name: str, value, *, positive: bool = False) -> float:
    """A finite real Python number (ints and numpy scalars too, but not bool: True is an int, and
    not a tensor: reading it would sync the device, and it would get no gradient) -> float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        kind = "a positive finite number" if positive else "a finite number"
        raise ValueError(f"{name} must be {kind} (int or float, not bool), got {_describe(value)}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if abs(value) > FP32_MAX:
        raise ValueError(f"{name} must fit in fp32 (|{name}| <= {FP32_MAX:.4g}), got {value!r}")
    return float(value)


def check_integer(name: str, value, *, positive: bool = False) -> int:
    """An integer (numpy ones too), never a bool or a float that happens to be whole."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or (positive and not value > 0)
    ):
        kind = "a positive integer" if positive else "an integer"
        raise ValueError(f"{name} must be {kind}, got {_describe(value)}")
    return int(value)
