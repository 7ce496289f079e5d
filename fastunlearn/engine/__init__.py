"""Engine: the UnlearnTrainer (a transformers.Trainer whose model is the objective), the
Unlearner that builds one from a run config, the config itself and checkpoints
(docs/architecture.md). Names load on first use, so reading a config does not import the
training stack."""

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
    "ObjectiveModule": "objective",
    "UnlearnTrainer": "trainer",
    "UnlearnTrainingArguments": "trainer",
    "Unlearner": "unlearner",
    "load_configured_tokenizer": "unlearner",
}
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
__all__ = sorted(_EXPORTS)
