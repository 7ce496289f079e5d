import copy

import pytest
import torch

from fastunlearn.models import CausalLMAdapter, ReferenceModel
from fastunlearn.objectives import GradientAscent, PairedBatch, Term, WeightedSum, ga_mismatch_kl
from tests.objectives import plain
from tests.objectives.helpers import assert_same_loss_and_gradients, nudge
from tests.tiny_models import random_sequence_batch, tiny_model


def paired_batch():
    return PairedBatch(
        forget=random_sequence_batch(seed=50),
        retain=random_sequence_batch(seed=51),
        mismatch=random_sequence_batch(seed=52, spans=((3, 5), (5, 3), (2, 2))),
    )


def test_ga_mismatch_kl_matches_plain_formulation():
    model, batch = tiny_model("opt"), paired_batch()
    original = copy.deepcopy(model)
    adapter = CausalLMAdapter(model)
    objective = ga_mismatch_kl(ReferenceModel(adapter))
    nudge(model)
    with torch.no_grad():
        reference_logits = plain.forward(original, batch.retain).logits

    def plain_loss():
        return (
            -0.5 * plain.mean_response_nll(model, batch.forget)
            + plain.mean_response_nll(model, batch.mismatch)
            + plain.retain_kl(model, reference_logits, batch.retain)
        )

    assert_same_loss_and_gradients(model, lambda: objective(adapter, batch).loss, plain_loss)


def test_stats_hold_the_total_and_each_term():
    model, batch = tiny_model("llama"), paired_batch()
    adapter = CausalLMAdapter(model)
    reference = ReferenceModel(adapter)
    nudge(model)
    loss, stats = ga_mismatch_kl(reference, ga_weight=0.25, mismatch_weight=2.0, kl_weight=3.0)(
        adapter, batch
    )
    assert set(stats) == {"loss", "ga", "ga/nll", "mismatch", "kl"}
    torch.testing.assert_close(stats["loss"], loss.detach())
    torch.testing.assert_close(
        loss.detach(), 0.25 * stats["ga"] + 2.0 * stats["mismatch"] + 3.0 * stats["kl"]
    )
    assert not any(value.requires_grad for value in stats.values())


def test_a_term_needs_its_part_of_the_batch():
    adapter = CausalLMAdapter(tiny_model("opt"))
    objective = ga_mismatch_kl(ReferenceModel(adapter))
    with pytest.raises(ValueError, match="'kl' reads batch.retain"):
        objective(
            adapter,
            PairedBatch(
                forget=random_sequence_batch(seed=53), mismatch=random_sequence_batch(seed=54)
            ),
        )


def test_terms_are_checked():
    with pytest.raises(ValueError, match="part must be one of"):
        Term("ga", GradientAscent(), 1.0, "harmful")
    with pytest.raises(ValueError, match="distinct names"):
        WeightedSum([Term("ga", GradientAscent(), 1.0, "forget")] * 2)
    with pytest.raises(ValueError, match="at least one term"):
        WeightedSum([])
