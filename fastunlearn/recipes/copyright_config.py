"""The settings of the copyright recipe (fastunlearn.recipes.copyright), apart from the
pipeline so that the command line reads them without importing torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

UNLEARN_OBJECTIVES = ("ga", "npo")
RETAIN_TERMS = ("nll", "kl", "none")


@dataclass
class CopyrightConfig:
    """Settings of the three stages (defaults sized for a ~3,000-word text on a small model)."""

    block_length: int = 64  # training blocks and leakage windows
    prefix_length: int = 32  # leakage: prompt tokens of a window; the rest is the continuation
    max_windows: int | None = 16  # leakage windows scored per evaluation (None: all)
    batch_size: int = 4
    lora_rank: int = 16
    lora_alpha: float = 32
    lora_target_modules: Sequence[str] | str | None = "all-linear"
    implant_steps: int = 100
    implant_lr: float = 1e-3
    implant_retain: str = (
        "kl"  # retain term while implanting: "kl" (to the original), "nll" or "none"
    )
    implant_retain_weight: float = 1.0
    unlearn_steps: int = 30
    unlearn_lr: float = 2e-4
    objective: str = "ga"  # "ga" or "npo"
    npo_beta: float = 0.1
    retain: str = "nll"  # "nll", "kl" or "none"
    retain_weight: float = 1.0
    eval_every: int = 0  # leakage every this many steps of each stage (0: only between stages)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.objective not in UNLEARN_OBJECTIVES:
            raise ValueError(
                f"objective must be one of {UNLEARN_OBJECTIVES}, got {self.objective!r}"
            )
        if self.retain not in RETAIN_TERMS:
            raise ValueError(f"retain must be one of {RETAIN_TERMS}, got {self.retain!r}")
        if not 0 < self.prefix_length < self.block_length:
            raise ValueError(
                f"prefix_length must lie in [1, block_length={self.block_length}), "
                f"got {self.prefix_length}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.implant_retain not in RETAIN_TERMS:
            raise ValueError(
                f"implant_retain must be one of {RETAIN_TERMS}, got {self.implant_retain!r}"
            )
        if self.implant_steps < 0 or self.unlearn_steps < 0:
            raise ValueError(
                f"steps must be non-negative, got implant_steps={self.implant_steps}, "
                f"unlearn_steps={self.unlearn_steps}"
            )
