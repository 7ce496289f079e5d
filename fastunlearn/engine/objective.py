"""The configured objective, and the one nn.Module whose forward computes the loss."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from fastunlearn.engine.config import ObjectiveConfig
from fastunlearn.models import CausalLMAdapter, ReferenceModel
from fastunlearn.objectives import (
    ObjectiveOutput,
    PairedBatch,
    ResponseNLL,
    RetainKL,
    Term,
    WeightedSum,
)


def build_objective(config: ObjectiveConfig, reference: ReferenceModel | None) -> WeightedSum:
    """The configured method's terms (its entry in objectives.methods) plus the optional
    retain term, as one WeightedSum. ``reference`` (the model before unlearning) is needed
    where ``config.needs_reference``."""
    if config.needs_reference and reference is None:
        raise ValueError(
            f"objective {config.name!r} with retain={config.retain!r} needs a reference model"
        )
    backend = config.backend
    terms = config.method.build(config.options, reference, backend)
    if config.retain == "nll":
        terms.append(
            Term("retain_nll", ResponseNLL(backend=backend), config.retain_weight, "retain")
        )
    elif config.retain == "kl":
        terms.append(Term("retain_kl", RetainKL(reference), config.retain_weight, "retain"))
    return WeightedSum(terms)


class ObjectiveModule(nn.Module):
    """Owns the trained model; ``forward(batch)`` runs the whole objective.

    Under ZeRO-3 every parameter is a shard until DeepSpeed gathers it for the forward of
    the module that owns it. The losses read output-head weights outside their modules
    (OPT's head is its input embedding), so those are registered as external parameters
    of this module: DeepSpeed then keeps them gathered through this whole forward and its
    backward (docs/models.md).
    """

    def __init__(
        self,
        model: nn.Module,
        objective: WeightedSum,
        external_parameters: Iterable[torch.nn.Parameter] = (),
    ):
        super().__init__()
        self.model = model
        self.objective = objective
        self.adapter = CausalLMAdapter(model)
        external_parameters = list(external_parameters)
        if external_parameters:
            import deepspeed

            for parameter in external_parameters:
                deepspeed.zero.register_external_parameter(self, parameter)

    def forward(self, batch: PairedBatch) -> ObjectiveOutput:
        return self.objective(self.adapter, batch)

    def activation_checkpointing_enable(self, **options) -> None:
        """The Trainer's gradient checkpointing, applied to the trained model."""
        self.model.activation_checkpointing_enable(**options)


def head_parameters(adapter: CausalLMAdapter) -> list[torch.nn.Parameter]:
    head = adapter.causal_lm.get_output_embeddings()
    return [p for p in (head.weight, head.bias) if p is not None]
