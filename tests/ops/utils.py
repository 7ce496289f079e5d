"""Comparison helpers shared by the op tests."""

import torch

# (rtol, atol) against the fp32 reference evaluated on the same (rounded) inputs.
TOLERANCE = {
    torch.float32: (1e-5, 1e-5),
    torch.float16: (5e-3, 5e-3),
    torch.bfloat16: (2e-2, 2e-2),
}


def assert_close(actual, expected, dtype, scale=1.0):
    rtol, atol = TOLERANCE[dtype]
    torch.testing.assert_close(
        actual.float().cpu(), expected.float().cpu(), rtol=rtol * scale, atol=atol * scale
    )
