"""HF causal LMs for the objectives: hidden states + output head, LoRA, reference, loading."""

from fastunlearn.models.adapter import (
    SUPPORTED_MODEL_TYPES,
    CausalLMAdapter,
    OutputHead,
    unwrap_causal_lm,
)
from fastunlearn.models.loading import (
    default_model_location,
    load_default_model,
    load_model,
    local_model_source,
)
from fastunlearn.models.lora import add_lora, lora_config
from fastunlearn.models.patch import apply_fastunlearn
from fastunlearn.models.reference import ReferenceModel, bf16_autocast, evaluation_mode

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "CausalLMAdapter",
    "OutputHead",
    "ReferenceModel",
    "add_lora",
    "apply_fastunlearn",
    "bf16_autocast",
    "default_model_location",
    "evaluation_mode",
    "load_default_model",
    "load_model",
    "local_model_source",
    "lora_config",
    "unwrap_causal_lm",
]
