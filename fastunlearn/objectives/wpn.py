"""WPN: Weighted Positional N-pair learning (Chen et al. 2024, arXiv 2408.09459;
docs/objectives.md)."""

from __future__ import annotations

import torch

from fastunlearn.models import CausalLMAdapter
from fastunlearn.objectives.batch import ContrastiveBatch
from fastunlearn.objectives.likelihood import (
    IGNORE_INDEX,
    mean_response_nll_from_hidden,
    per_sequence_token_weights,
)
from fastunlearn.objectives.methods import WPNOptions
from fastunlearn.objectives.output import ObjectiveOutput
from fastunlearn.ops import linear_nll, npair_loss, position_weighted_mean_pool
from fastunlearn.ops.npair import SIMILARITIES

CANDIDATE_SPANS = ("response", "sequence")


class WPN:
    """loss = npair_weight * npair_loss(a, [c_+, c_1 .. c_N], temperature) per prompt, averaged
    over prompts, + positive_nll_weight * (1/P) sum_p mean_{t in positive_p} -log p(y_t | y_<t).

    a = pool(prompt span), c = pool(candidate span of [prompt ; response]) with pool the
    position-weighted mean of ``layer``'s hidden states (None: the output head's input).
    ``candidate_span`` "response" pools the response tokens, "sequence" prompt and response.
    The paper's temperature was not available to us; 0.1 is a starting point to tune.

    The N-pair term moves pooled representations, not token likelihoods; the optional
    likelihood term on the positives (refusals) makes the model also say them. With the
    pooled layer at the head input it reuses the positives' rows of the same forward.
    npair_weight=0 keeps that likelihood term alone (an ablation: what the N-pair term adds).
    The unlikelihood term makes the negatives' openings unlikely token by token (a refusal
    after a benign prompt, "Sure, here is" after a harmful one), bounded where GA is not:
    it asks for nothing once a token is improbable.
    """

    def __init__(
        self,
        temperature: float = WPNOptions.temperature,
        similarity: str = WPNOptions.similarity,
        layer: int | None = WPNOptions.layer,
        candidate_span: str = WPNOptions.candidate_span,
        positive_nll_weight: float = WPNOptions.positive_nll_weight,
        npair_weight: float = WPNOptions.npair_weight,
        opening_tokens: int = WPNOptions.opening_tokens,
        opening_weight: float = WPNOptions.opening_weight,
        negative_unlikelihood_weight: float = WPNOptions.negative_unlikelihood_weight,
        *,
        backend: str | None = None,
    ):
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
        if candidate_span not in CANDIDATE_SPANS:
            raise ValueError(
                f"candidate_span must be one of {CANDIDATE_SPANS}, got {candidate_span!r}"
            )
        for name, weight in (
            ("positive_nll_weight", positive_nll_weight),
            ("npair_weight", npair_weight),
        ):
            if not weight >= 0:
                raise ValueError(f"{name} must be >= 0, got {weight}")
        if npair_weight == 0 and positive_nll_weight == 0:
            raise ValueError(
                "npair_weight and positive_nll_weight are both 0: WPN would train nothing"
            )
        self.temperature, self.similarity, self.layer = temperature, similarity, layer
        self.candidate_span, self.backend = candidate_span, backend
        self.positive_nll_weight, self.npair_weight = positive_nll_weight, npair_weight
        self.opening_tokens, self.opening_weight = opening_tokens, opening_weight
        self.negative_unlikelihood_weight = negative_unlikelihood_weight

    def __call__(self, model: CausalLMAdapter, batch: ContrastiveBatch) -> ObjectiveOutput:
        k = batch.num_candidates
        # One forward over all P * (1 + N) sequences.
        hidden = model.hidden_states(batch.input_ids, batch.attention_mask, self.layer)
        # Causal attention: the prompt's hidden states are the same in every row of a group,
        # so the anchor comes from the positive's row (the first of each group).
        anchor = position_weighted_mean_pool(
            hidden[::k], batch.prompt_mask[::k], backend=self.backend
        )
        span = (
            batch.response_mask
            if self.candidate_span == "response"
            else batch.response_mask | batch.prompt_mask
        )
        candidates = position_weighted_mean_pool(hidden, span, backend=self.backend).view(
            batch.num_prompts, k, -1
        )
        loss, logits = npair_loss(
            anchor,
            candidates,
            self.temperature,
            self.similarity,
            batch.candidate_mask,
            return_logits=True,
            backend=self.backend,
        )
        stats = self._stats(logits)
        stats["npair"] = loss.detach()
        loss = self.npair_weight * loss
        if self.positive_nll_weight:
            # The positives are the first row of each group; their rows of this forward
            # serve when it pooled the head input, else they need one of their own.
            ids, attention, response = (
                batch.input_ids[::k],
                batch.attention_mask[::k],
                batch.response_mask[::k],
            )
            head_input = (
                hidden[::k] if self.layer in (None, -1) else model.hidden_states(ids, attention)
            )
            positive_nll = mean_response_nll_from_hidden(
                model,
                head_input,
                ids,
                response,
                self.positive_nll_weight,
                self.backend,
                per_sequence_token_weights(response, self.opening_tokens, self.opening_weight),
            )
            loss = loss + positive_nll
            stats["positive_nll"] = positive_nll.detach() / self.positive_nll_weight
        if self.negative_unlikelihood_weight:
            unlikelihood = self._negative_unlikelihood(model, batch, hidden)
            loss = loss + self.negative_unlikelihood_weight * unlikelihood
            stats["negative_unlikelihood"] = unlikelihood.detach()
        return ObjectiveOutput(loss, stats)

    def _negative_unlikelihood(
        self, model: CausalLMAdapter, batch: ContrastiveBatch, hidden: torch.Tensor
    ) -> torch.Tensor:
        """Mean over the negatives in candidate_mask of the mean over their first
        opening_tokens tokens of -log(1 - p(y_t | y_<t))."""
        k = batch.num_candidates
        rows = torch.arange(batch.input_ids.shape[0], device=hidden.device) % k != 0
        if batch.candidate_mask is not None:
            rows &= batch.candidate_mask.reshape(-1).to(rows.device)
        ids = batch.input_ids[rows]
        head_input = (
            hidden[rows]
            if self.layer in (None, -1)
            else model.hidden_states(ids, batch.attention_mask[rows])
        )
        counted = batch.response_mask[rows][:, 1:]
        opening = counted & (counted.cumsum(dim=1) <= self.opening_tokens)
        head = model.output_head()
        token_nll = linear_nll(
            head_input[:, :-1],
            head.weight,
            ids[:, 1:].long().masked_fill(~opening, IGNORE_INDEX),
            head.bias,
            ignore_index=IGNORE_INDEX,
            reduction="none",
            backend=self.backend,
        )
        # -log(1 - p) with p = exp(-nll); p kept below 1 so the gradient stays finite.
        unlikely = -torch.log(-torch.expm1(-token_nll.clamp_min(1e-6)))
        per_sequence = (unlikely * opening).sum(dim=1) / opening.sum(dim=1).clamp_min(1)
        return per_sequence.mean()

    def _stats(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        similarity = logits * self.temperature  # -inf where a candidate is masked out
        negatives = similarity[:, 1:]
        present = torch.isfinite(negatives)
        return {
            "accuracy": (logits.argmax(dim=1) == 0).float().mean(),  # the positive scores highest
            "positive_similarity": similarity[:, 0].mean(),
            "negative_similarity": torch.where(present, negatives, 0.0).sum() / present.sum(),
        }
