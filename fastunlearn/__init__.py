"""fastunlearn: fused kernels and methods that make a language model forget.

The three ops (functions and ``nn.Module``s) and ``apply_fastunlearn`` (the fused loss in
any Hugging Face causal LM) are importable from here; the layers (``fastunlearn.engine``, ``.eval``,
``.recipes``, ...) are subpackages. Names load on first use (``fastunlearn._lazy``).
"""

from fastunlearn._lazy import lazy_exports

__version__ = "0.1.0"

_OPS = (
    "linear_nll",
    "npair_loss",
    "position_weighted_mean_pool",
    "LinearNLLLoss",
    "NPairLoss",
    "PositionWeightedMeanPool",
)
__getattr__, __dir__ = lazy_exports(
    globals(), {**dict.fromkeys(_OPS, "ops"), "apply_fastunlearn": "models"}
)
__all__ = [*_OPS, "apply_fastunlearn", "__version__"]
