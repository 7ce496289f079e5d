"""KL to the reference model on normal data: keeps next-token distributions where they were."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from fastunlearn.models import CausalLMAdapter, OutputHead, ReferenceModel
from fastunlearn.objectives.batch import SequenceBatch
from fastunlearn.objectives.output import ObjectiveOutput

LOGITS_BUDGET = 1 << 22  # elements of one [chunk, V] buffer (16 MiB in fp32); a chunk holds a few


def _chunk_kl_sum(hidden, ref_hidden, weight, bias, ref_weight, ref_bias, token_mask):
    log_p = F.linear(hidden, weight, bias).float().log_softmax(dim=-1)
    log_p_ref = F.linear(ref_hidden, ref_weight, ref_bias).float().log_softmax(dim=-1)
    kl = F.kl_div(log_p, log_p_ref, log_target=True, reduction="none").sum(dim=-1)
    return (kl * token_mask).sum()


def kl_sum(
    hidden: torch.Tensor,
    head: OutputHead,
    ref_hidden: torch.Tensor,
    ref_head: OutputHead,
    token_mask: torch.Tensor,
    chunk_size: int,
) -> torch.Tensor:
    """sum_t mask_t KL(p_ref,t || p_t) over hidden[N, H], chunk_size tokens at a time.

    Each chunk is checkpointed: its logits are freed after forward and recomputed in
    backward, so memory stays at one chunk's [chunk_size, V] buffers instead of [N, V].
    """
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        total = total + checkpoint(
            _chunk_kl_sum,
            hidden[rows],
            ref_hidden[rows],
            head.weight,
            head.bias,
            ref_head.weight,
            ref_head.bias,
            token_mask[rows],
            use_reentrant=False,
        )
    return total


class RetainKL:
    """loss = mean over real (non-padding) tokens t of KL(p_ref(. | x_<=t) || p(. | x_<=t)).

    Padding is left out of both the sum and the count (the public reference code of Yao et
    al. averaged over padding too). Uses no fused op: the KL needs both models' full
    distributions, computed here in token chunks.
    """

    def __init__(self, reference: ReferenceModel, *, chunk_size: int | None = None):
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
        self.reference, self.chunk_size = reference, chunk_size

    def __call__(self, model: CausalLMAdapter, batch: SequenceBatch) -> ObjectiveOutput:
        hidden = model.hidden_states(batch.input_ids, batch.attention_mask)
        ref_hidden = self.reference.hidden_states(batch.input_ids, batch.attention_mask)
        head, ref_head = model.output_head(), self.reference.output_head()
        real = batch.attention_mask.reshape(-1).float()
        chunk = self.chunk_size or max(1, LOGITS_BUDGET // head.weight.shape[0])
        total = kl_sum(
            hidden.reshape(-1, hidden.shape[-1]),
            head,
            ref_hidden.reshape(-1, ref_hidden.shape[-1]),
            ref_head,
            real,
            chunk,
        )
        return ObjectiveOutput(total / real.sum(), {})
