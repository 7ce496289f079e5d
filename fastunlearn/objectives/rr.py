"""RR: representation rerouting, as in circuit breakers (Zou et al. 2024, arXiv 2406.04313;
docs/objectives.md).

Two terms compare the model's hidden states at chosen layers with the reference's at the
same positions: ``Reroute`` on forget responses, ``Hold`` on retain text.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from fastunlearn.models import CausalLMAdapter, ReferenceModel
from fastunlearn.objectives.batch import SequenceBatch
from fastunlearn.objectives.methods import RROptions
from fastunlearn.objectives.output import ObjectiveOutput


def _token_states(
    model: CausalLMAdapter,
    reference: ReferenceModel,
    batch: SequenceBatch,
    layers: Sequence[int],
    tokens: torch.Tensor,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the [N, H] fp32 hidden states of the model and of the reference at the
    ``tokens`` ([B, T] bool); one forward each, whatever the number of layers. (Not one
    tensor: widths may differ, as OPT's last entry after project_out.)"""
    # hidden_states holds the embedding output and one entry per block: count + 1 in all.
    count = model.causal_lm.config.num_hidden_layers
    beyond = [layer for layer in layers if not -(count + 1) <= layer <= count]
    if beyond:
        raise ValueError(
            f"objective.layers={list(layers)}: {beyond} beyond the model's {count} layers "
            f"(valid: 0..{count}, or negative from the end)"
        )
    hidden = model.hidden_states_at(batch.input_ids, batch.attention_mask, layers)
    ref_hidden = reference.hidden_states_at(batch.input_ids, batch.attention_mask, layers)
    # Selecting the tokens (rather than multiplying by a mask) keeps whatever sits at padding
    # out of the loss and its gradient.
    return [(h[tokens].float(), r[tokens].float()) for h, r in zip(hidden, ref_hidden, strict=True)]


class Reroute:
    """loss = mean over forget response tokens t and layers l of
    ReLU(cos(h_l(t), h_ref_l(t))).

    Turns the model's representations of harmful answers away from the original ones; the
    ReLU stops the push at orthogonal (pointing the opposite way gains nothing). The start
    (model = reference) is this term's maximum, where its gradient is only rounding noise;
    beside Hold it can stay there (docs/objectives.md). Stat ``cos``: the mean cosine,
    before the ReLU.
    """

    def __init__(self, reference: ReferenceModel, layers: Sequence[int] = RROptions.layers):
        self.reference, self.layers = reference, tuple(layers)

    def __call__(self, model: CausalLMAdapter, batch: SequenceBatch) -> ObjectiveOutput:
        states = _token_states(model, self.reference, batch, self.layers, batch.response_mask)
        cos = torch.stack([F.cosine_similarity(h, r, dim=-1) for h, r in states])  # [L, N]
        return ObjectiveOutput(F.relu(cos).mean(), {"cos": cos.detach().mean()})


class Hold:
    """loss = mean over retain real (non-padding) tokens t and layers l of
    ||h_l(t) - h_ref_l(t)||_2.

    Keeps the representations of normal text where they were, prompt tokens included.
    """

    def __init__(self, reference: ReferenceModel, layers: Sequence[int] = RROptions.layers):
        self.reference, self.layers = reference, tuple(layers)

    def __call__(self, model: CausalLMAdapter, batch: SequenceBatch) -> ObjectiveOutput:
        states = _token_states(
            model, self.reference, batch, self.layers, batch.attention_mask.bool()
        )
        distance = torch.stack([torch.linalg.vector_norm(h - r, dim=-1) for h, r in states])
        return ObjectiveOutput(distance.mean(), {})
