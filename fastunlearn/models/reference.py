"""The model as it was before unlearning, for the KL, NPO and RR terms (docs/objectives.md).

With LoRA (a peft-wrapped model) the reference is the same model with its adapters
disabled: no second copy in memory. Without, it is a frozen deep copy taken when the
ReferenceModel is built, so build it before training starts and after moving the model to
its device.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from fastunlearn.models.adapter import CausalLMAdapter, OutputHead


@contextlib.contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[None]:
    """Run ``module`` in eval mode (no dropout), then restore each submodule's own mode."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def bf16_autocast(module: nn.Module, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Mixed precision for inference (generation, evaluation): matrix products in bfloat16 on
    ``module``'s device, weights kept as they are. On CPUs with bf16 instructions it samples
    more than twice as fast as fp32 (docs/evaluation.md)."""
    device = next(module.parameters()).device.type
    return torch.autocast(device, dtype=torch.bfloat16, enabled=enabled)


class ReferenceModel:
    """No-gradient, deterministic (eval mode) hidden states and head of the original model."""

    def __init__(self, adapter: CausalLMAdapter, *, copy_weights: bool = True):
        """``adapter`` wraps the model about to be trained. With LoRA the reference shares it
        (adapters disabled while it runs); without, it holds a frozen deep copy, or with
        ``copy_weights=False`` freezes and holds the given model itself: a second copy the
        caller loaded (under ZeRO-3, where a deep copy would copy this rank's shards only)."""
        self.shares_weights = adapter.is_peft
        if self.shares_weights:
            self.adapter = adapter
        else:
            model = copy.deepcopy(adapter.model) if copy_weights else adapter.model
            self.adapter = CausalLMAdapter(model.eval().requires_grad_(False))

    def _original_weights(self) -> contextlib.AbstractContextManager:
        return (
            self.adapter.model.disable_adapter()
            if self.shares_weights
            else contextlib.nullcontext()
        )

    @torch.no_grad()
    def hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer: int | None = None
    ) -> torch.Tensor:
        with self._original_weights(), evaluation_mode(self.adapter.model):
            return self.adapter.hidden_states(input_ids, attention_mask, layer)

    @torch.no_grad()
    def hidden_states_at(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layers: Sequence[int]
    ) -> list[torch.Tensor]:
        with self._original_weights(), evaluation_mode(self.adapter.model):
            return self.adapter.hidden_states_at(input_ids, attention_mask, layers)

    def output_head(self) -> OutputHead:
        head = self.adapter.output_head()
        return OutputHead(head.weight.detach(), None if head.bias is None else head.bias.detach())
