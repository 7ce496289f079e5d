"""Engine: the Unlearner training loop (plain PyTorch or DeepSpeed), its config,
checkpoints and metrics (DESIGN.md §2)."""

from fastunlearn.engine.checkpoint import (
    CheckpointMismatchError,
    latest_checkpoint,
    list_checkpoints,
)
from fastunlearn.engine.config import (
    DataConfig,
    GenerationConfig,
    LoraSettings,
    ModelConfig,
    ObjectiveConfig,
    SourceConfig,
    TrainConfig,
    UnlearnConfig,
)
from fastunlearn.engine.overrides import ConfigError, load_config
from fastunlearn.engine.unlearner import Unlearner

__all__ = [
    "CheckpointMismatchError",
    "ConfigError",
    "DataConfig",
    "GenerationConfig",
    "LoraSettings",
    "ModelConfig",
    "ObjectiveConfig",
    "SourceConfig",
    "TrainConfig",
    "UnlearnConfig",
    "Unlearner",
    "latest_checkpoint",
    "list_checkpoints",
    "load_config",
]
