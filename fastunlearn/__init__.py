"""fastunlearn: fused kernels and methods that make a language model forget.

The three ops are importable from here; the layers (``fastunlearn.engine``, ``.eval``,
``.recipes``, ...) are subpackages. Names load on first use (``fastunlearn._lazy``).
"""

from fastunlearn._lazy import lazy_exports

__version__ = "0.1.0"

_OPS = ("linear_nll", "npair_loss", "position_weighted_mean_pool")
__getattr__, __dir__ = lazy_exports(globals(), dict.fromkeys(_OPS, "ops"))
__all__ = [*_OPS, "__version__"]
