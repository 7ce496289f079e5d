import pytest
import torch

from fastunlearn.models import CausalLMAdapter
from fastunlearn.objectives import GradientAscent, ResponseNLL, SequenceBatch, response_logprob
from tests.objectives import plain
from tests.objectives.helpers import ARCHITECTURES, BACKENDS, assert_same_loss_and_gradients
from tests.tiny_models import random_sequence_batch, tiny_model


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_gradient_ascent_matches_plain_formulation(model_type, backend):
    model, batch = tiny_model(model_type), random_sequence_batch(seed=10)
    objective, adapter = GradientAscent(backend=backend), CausalLMAdapter(model)
    assert_same_loss_and_gradients(
        model,
        lambda: objective(adapter, batch).loss,
        lambda: -plain.mean_response_nll(model, batch),
    )


def test_response_nll_matches_plain_formulation():
    model, batch = tiny_model("llama"), random_sequence_batch(seed=11)
    objective, adapter = ResponseNLL(), CausalLMAdapter(model)
    assert_same_loss_and_gradients(
        model, lambda: objective(adapter, batch).loss, lambda: plain.mean_response_nll(model, batch)
    )


def test_each_sequence_counts_equally_and_stats_report_the_nll():
    model, batch = tiny_model("opt"), random_sequence_batch(seed=12, spans=((2, 1), (2, 9)))
    output = GradientAscent()(CausalLMAdapter(model), batch)
    with torch.no_grad():
        per_token = plain.response_token_nll(plain.forward(model, batch).logits, batch)
    short, long = per_token[0].sum() / 1, per_token[1].sum() / 9
    torch.testing.assert_close(output.loss, -(short + long) / 2)
    torch.testing.assert_close(output.stats["nll"], -output.loss.detach())


@pytest.mark.parametrize("backend", BACKENDS)
def test_response_logprob_matches_plain_formulation(backend):
    model, batch = tiny_model("gpt_neo"), random_sequence_batch(seed=13)
    with torch.no_grad():
        torch.testing.assert_close(
            response_logprob(CausalLMAdapter(model), batch, backend),
            plain.response_logprob(model, batch),
            rtol=1e-5,
            atol=1e-5,
        )


def test_text_blocks_without_a_prompt_are_all_response():
    model, base = tiny_model("opt"), random_sequence_batch(seed=14)
    block = SequenceBatch(
        base.input_ids,
        base.attention_mask,
        torch.zeros_like(base.prompt_mask),
        base.attention_mask.bool(),
    )
    objective, adapter = GradientAscent(backend="torch"), CausalLMAdapter(model)
    assert_same_loss_and_gradients(
        model,
        lambda: objective(adapter, block).loss,
        lambda: -plain.mean_response_nll(model, block),
    )
