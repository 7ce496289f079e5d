"""fastunlearn: fused kernels and methods that make a language model forget."""

from fastunlearn.ops import linear_nll, npair_loss, position_weighted_mean_pool

__version__ = "0.1.0"
__all__ = ["linear_nll", "npair_loss", "position_weighted_mean_pool", "__version__"]
