"""Likelihood terms on response tokens: ascent, descent (retain, mismatch), sequence log-probs.

Hidden state t predicts token t+1, so the targets of hidden[:, :-1] are input_ids[:, 1:],
counted where that token lies in the response span. linear_nll never builds the logits.
"""

from __future__ import annotations

import torch

from fastunlearn.models import CausalLMAdapter, ReferenceModel
from fastunlearn.objectives.batch import SequenceBatch
from fastunlearn.objectives.output import ObjectiveOutput
from fastunlearn.ops import linear_nll

IGNORE_INDEX = -100


def response_labels(input_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """[B, T-1]: the next token where it belongs to the response, IGNORE_INDEX elsewhere."""
    return input_ids[:, 1:].long().masked_fill(~response_mask[:, 1:], IGNORE_INDEX)


def per_sequence_token_weights(
    response_mask: torch.Tensor, opening_tokens: int = 0, opening_weight: float = 1.0
) -> torch.Tensor:
    """[B, T-1] weights on response targets that sum to 1/B in every sequence.

    Every sequence then counts equally, however long its response (Yao et al. average the
    token losses within each answer, then over answers). The first ``opening_tokens``
    targets of each response weigh ``opening_weight`` times the others before that
    normalisation: the opening is where a model commits to answering or refusing.
    """
    counted = response_mask[:, 1:].float()
    if opening_tokens and opening_weight != 1.0:
        opening = (counted.cumsum(dim=1) <= opening_tokens) & (counted > 0)
        counted = counted + (opening_weight - 1.0) * opening.float()
    return counted / (counted.sum(dim=1, keepdim=True) * counted.shape[0])


def mean_response_nll(
    model: CausalLMAdapter, batch: SequenceBatch, scale: float, backend: str | None
) -> torch.Tensor:
    """scale * (1/B) sum_b mean_{t in response_b} -log p(y_t | y_<t)."""
    hidden = model.hidden_states(batch.input_ids, batch.attention_mask)
    return mean_response_nll_from_hidden(
        model, hidden, batch.input_ids, batch.response_mask, scale, backend
    )


def mean_response_nll_from_hidden(
    model: CausalLMAdapter,
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    response_mask: torch.Tensor,
    scale: float,
    backend: str | None,
    token_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """mean_response_nll given the sequences' head-input hidden states [B, T, H];
    ``token_weight`` [B, T-1] replaces the equal per-sequence weights."""
    head = model.output_head()
    return linear_nll(
        hidden[:, :-1],
        head.weight,
        response_labels(input_ids, response_mask),
        head.bias,
        token_weight=(
            per_sequence_token_weights(response_mask) if token_weight is None else token_weight
        ),
        scale=scale,
        ignore_index=IGNORE_INDEX,
        reduction="sum",
        backend=backend,
    )


def response_logprob(
    model: CausalLMAdapter | ReferenceModel, batch: SequenceBatch, backend: str | None
) -> torch.Tensor:
    """[B]: log p(response | prompt) = sum over response tokens of log p(y_t | y_<t)."""
    hidden = model.hidden_states(batch.input_ids, batch.attention_mask)
    head = model.output_head()
    token_nll = linear_nll(
        hidden[:, :-1],
        head.weight,
        response_labels(batch.input_ids, batch.response_mask),
        head.bias,
        ignore_index=IGNORE_INDEX,
        reduction="none",
        backend=backend,
    )
    return -token_nll.sum(dim=1)


class GradientAscent:
    """loss = -(1/B) sum_b mean_{t in response_b} NLL_t on forget pairs.

    Ascent: linear_nll with scale -1 folds the sign into its fused gradient.
    """

    def __init__(self, *, backend: str | None = None):
        self.backend = backend

    def __call__(self, model: CausalLMAdapter, batch: SequenceBatch) -> ObjectiveOutput:
        loss = mean_response_nll(model, batch, scale=-1.0, backend=self.backend)
        return ObjectiveOutput(loss, {"nll": -loss.detach()})


class ResponseNLL:
    """loss = (1/B) sum_b mean_{t in response_b} NLL_t: descent on the response span only.

    The retain NLL term on normal data, and Yao et al.'s random-mismatch term on harmful
    prompts paired with normal answers (the prompt's tokens are not counted, unlike the
    public reference code).
    """

    def __init__(self, *, backend: str | None = None):
        self.backend = backend

    def __call__(self, model: CausalLMAdapter, batch: SequenceBatch) -> ObjectiveOutput:
        loss = mean_response_nll(model, batch, scale=1.0, backend=self.backend)
        return ObjectiveOutput(loss, {})
