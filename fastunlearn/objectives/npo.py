"""Negative Preference Optimization (Zhang et al. 2024, arXiv 2404.05868)."""

from __future__ import annotations

import torch.nn.functional as F

from fastunlearn.models import CausalLMAdapter, ReferenceModel
from fastunlearn.objectives.batch import SequenceBatch
from fastunlearn.objectives.likelihood import response_logprob
from fastunlearn.objectives.methods import NPOOptions
from fastunlearn.objectives.output import ObjectiveOutput


class NPO:
    """loss = -(2/beta) mean_b log sigmoid(-beta (log pi(y_b|x_b) - log pi_ref(y_b|x_b))).

    On forget pairs; log pi(y|x) sums the response tokens' log-probabilities.

    Like gradient ascent it lowers log pi(y|x), but the push fades once the response is
    less likely than under the reference, which keeps the model from collapsing.
    """

    def __init__(
        self,
        reference: ReferenceModel,
        beta: float = NPOOptions.beta,
        *,
        backend: str | None = None,
    ):
        if not beta > 0:
            raise ValueError(f"beta must be positive, got {beta!r}")
        self.reference, self.beta, self.backend = reference, beta, backend

    def __call__(self, model: CausalLMAdapter, batch: SequenceBatch) -> ObjectiveOutput:
        log_ratio = response_logprob(model, batch, self.backend) - response_logprob(
            self.reference, batch, self.backend
        )
        loss = -(2.0 / self.beta) * F.logsigmoid(-self.beta * log_ratio).mean()
        return ObjectiveOutput(loss, {"log_ratio": log_ratio.detach().mean()})
