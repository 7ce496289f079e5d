"""A drop-in for Hugging Face causal LMs, in the way Liger-Kernel patches models: after
``apply_fastunlearn(model)``, ``model(input_ids, labels=...)`` computes its loss with the
fused ``linear_nll`` from the head's input, never building the [B, T, V] logits. Any
training code that reads ``outputs.loss`` (transformers.Trainer, TRL, accelerate, a loop of
your own) gets the memory saving unchanged.

``scale=-1`` turns that loss into gradient ascent on the given text: the simplest unlearning
objective, in a stock Trainer. Without labels, the model computes logits as before (so
generation is untouched); with labels, ``outputs.logits`` is None.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from fastunlearn.models.adapter import CausalLMAdapter
from fastunlearn.ops import linear_nll

PATCHED = "_fastunlearn_scale"


def apply_fastunlearn(
    model: PreTrainedModel, *, scale: float = 1.0, backend: str | None = None
) -> PreTrainedModel:
    """Patch ``model`` (an HF causal LM, or a peft model around one) in place and return it.

    The loss is HF's: labels are shifted by one inside, -100 is ignored, the mean runs over
    the counted tokens, or over ``num_items_in_batch`` when the Trainer passes it (gradient
    accumulation then weighs every token alike), times ``scale``.
    """
    adapter = CausalLMAdapter(model)  # refuses architectures with logit post-processing
    causal_lm = adapter.causal_lm
    if hasattr(causal_lm, PATCHED):
        raise ValueError("apply_fastunlearn: this model is patched already")
    original_forward = causal_lm.forward

    def forward(
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        if labels is None:
            return original_forward(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        for fixed in ("use_cache", "return_dict"):  # set below; peft passes them along
            kwargs.pop(fixed, None)
        outputs = causal_lm.base_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            use_cache=False,
            return_dict=True,
            **kwargs,
        )
        hidden = outputs.last_hidden_state[:, :-1]
        head = adapter.output_head()
        sum_over_batch = num_items_in_batch is not None
        loss = linear_nll(
            hidden.reshape(-1, hidden.shape[-1]),
            head.weight,
            labels[:, 1:].reshape(-1).to(hidden.device),
            head.bias,
            scale=scale,
            reduction="sum" if sum_over_batch else "mean",
            backend=backend,
        )
        if sum_over_batch:
            loss = loss / num_items_in_batch
        return CausalLMOutputWithPast(
            loss=loss,
            logits=None,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    causal_lm.forward = forward
    setattr(causal_lm, PATCHED, scale)
    return model
