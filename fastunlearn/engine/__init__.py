"""Engine: the Unlearner training loop (plain PyTorch or DeepSpeed), its config,
checkpoints and metrics (docs/architecture.md). Names load on first use, so reading a
config does not import the training stack."""

from fastunlearn._lazy import lazy_exports

_EXPORTS = {
    "CheckpointMismatchError": "checkpoint",
    "latest_checkpoint": "checkpoint",
    "list_checkpoints": "checkpoint",
    "DataConfig": "config",
    "EvaluationConfig": "config",
    "GenerationConfig": "config",
    "LoraSettings": "config",
    "ModelConfig": "config",
    "ObjectiveConfig": "config",
    "SourceConfig": "config",
    "TrainConfig": "config",
    "UnlearnConfig": "config",
    "ConfigError": "overrides",
    "load_config": "overrides",
    "Unlearner": "unlearner",
}
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
__all__ = sorted(_EXPORTS)
