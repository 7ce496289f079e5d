"""Hidden states and output head of an HF causal LM, without computing the logits.

The fused ops take the input of the output head and the head's weight, so the adapter runs
the model's transformer body (``base_model``: OPTModel, GPTNeoModel, GPT2Model, LlamaModel,
...) and hands out the head's parameters. Logits of a whole batch ([B, T, V]) are never
built here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from peft import PeftModel
from torch import nn
from transformers import PreTrainedModel

# Architectures whose body's last hidden state feeds one linear head with no logit
# post-processing (no soft-capping or scaling), checked in tests/models against HF's logits.
# OPT's optional project_out is part of its decoder, so it is covered.
SUPPORTED_MODEL_TYPES = ("opt", "gpt_neo", "gpt2", "llama", "mistral", "qwen2")


@dataclass(frozen=True)
class OutputHead:
    """logits = hidden @ weight.T + bias; weight [V, H] (tied to the input embedding in OPT)."""

    weight: torch.Tensor
    bias: torch.Tensor | None


def unwrap_causal_lm(model: PreTrainedModel | PeftModel) -> PreTrainedModel:
    """The HF causal LM inside a peft wrapper (its layers carry the adapters), or ``model``."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


class CausalLMAdapter:
    """Runs an HF causal LM (optionally peft-wrapped) up to the input of its output head.

    ``model`` is what an optimizer trains; with LoRA, pass the PeftModel.
    """

    def __init__(self, model: PreTrainedModel | PeftModel):
        self.model = model
        self.causal_lm = unwrap_causal_lm(model)
        self.model_type = self.causal_lm.config.model_type
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model_type {self.model_type!r} is not supported: fastunlearn needs a causal LM "
                "whose last hidden state feeds one linear output head; supported: "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        self.output_head()  # fail now, not at the first loss, if the head is wrapped

    @property
    def is_peft(self) -> bool:
        return isinstance(self.model, PeftModel)

    def hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int | None = None
    ) -> torch.Tensor:
        """Hidden states [B, T, H] of the head input, or of ``layer``.

        ``layer`` indexes HF's ``hidden_states`` tuple: 0 is the embedding output, i the
        output of block i, and -1 (like None) the head input (after the final norm, and
        after OPT's project_out). None avoids keeping the other layers' outputs.
        """
        if layer is None:
            return self._body(input_ids, attention_mask, all_layers=False).last_hidden_state
        return self.hidden_states_at(input_ids, attention_mask, [layer])[0]

    def hidden_states_at(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layers: Sequence[int]
    ) -> list[torch.Tensor]:
        """Hidden states [B, T, H] of each of ``layers`` (indexed as in ``hidden_states``),
        all from one forward pass."""
        outputs = self._body(input_ids, attention_mask, all_layers=True)
        return [outputs.hidden_states[layer] for layer in layers]

    def _body(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, all_layers: bool):
        return self.causal_lm.base_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            use_cache=False,
            output_hidden_states=all_layers,
            return_dict=True,
        )

    def output_head(self) -> OutputHead:
        head = self.causal_lm.get_output_embeddings()
        if type(head) is not nn.Linear:
            raise ValueError(
                f"the output head of this {self.model_type} model is {type(head).__name__}, not a "
                "plain nn.Linear: the fused losses need its weight (adapters such as LoRA on the "
                "head are not supported; leave lm_head out of target_modules)"
            )
        return OutputHead(head.weight, head.bias)
