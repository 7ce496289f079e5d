"""LoRA adapters through peft: the trainable part of a model whose base weights stay frozen."""

from __future__ import annotations

from collections.abc import Sequence

from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import PreTrainedModel


def lora_config(
    rank: int = 8,
    alpha: float = 16,
    dropout: float = 0.05,
    target_modules: Sequence[str] | str | None = None,
) -> LoraConfig:
    """A causal-LM LoraConfig.

    ``target_modules=None`` takes peft's per-architecture default (the attention query and
    value projections: q_proj/v_proj for OPT, GPT-Neo and Llama, c_attn for GPT-2);
    ``"all-linear"`` adapts every linear layer except the output head.
    """
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=(
            target_modules
            if target_modules is None or isinstance(target_modules, str)
            else list(target_modules)
        ),
    )


def add_lora(model: PreTrainedModel, config: LoraConfig | None = None) -> PeftModel:
    """Wrap ``model`` with trainable LoRA adapters (``lora_config()`` unless given).

    peft injects the adapters into ``model``'s own layers and freezes every other weight;
    the returned PeftModel is what the optimizer trains and what ReferenceModel runs with
    the adapters disabled.
    """
    return get_peft_model(model, config if config is not None else lora_config())
