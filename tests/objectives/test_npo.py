import copy

import pytest
import torch

from fastunlearn.models import CausalLMAdapter, ReferenceModel, add_lora, lora_config
from fastunlearn.objectives import NPO
from tests.objectives import plain
from tests.objectives.helpers import ARCHITECTURES, BACKENDS, assert_same_loss_and_gradients, nudge
from tests.tiny_models import random_sequence_batch, tiny_model


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_npo_with_frozen_copy_matches_plain_formulation(model_type, backend):
    model, batch = tiny_model(model_type), random_sequence_batch(seed=20)
    original = copy.deepcopy(model)
    adapter = CausalLMAdapter(model)
    objective = NPO(ReferenceModel(adapter), beta=0.5, backend=backend)
    nudge(model)
    with torch.no_grad():
        reference_logprob = plain.response_logprob(original, batch)
    assert_same_loss_and_gradients(
        model,
        lambda: objective(adapter, batch).loss,
        lambda: plain.npo(model, reference_logprob, batch, beta=0.5),
    )


def test_npo_with_lora_reference_matches_plain_formulation():
    model = add_lora(tiny_model("llama"), lora_config(rank=4, dropout=0.0))
    batch = random_sequence_batch(seed=21)
    adapter = CausalLMAdapter(model)
    objective = NPO(ReferenceModel(adapter), beta=0.1)
    nudge(model.get_base_model().model.layers[0].self_attn.q_proj.lora_B)  # adapters away from zero
    with torch.no_grad(), model.disable_adapter():
        reference_logprob = plain.response_logprob(model, batch)
    output = objective(adapter, batch)
    torch.testing.assert_close(
        output.stats["log_ratio"],
        (plain.response_logprob(model, batch) - reference_logprob).detach().mean(),
    )
    assert_same_loss_and_gradients(
        model,
        lambda: objective(adapter, batch).loss,
        lambda: plain.npo(model, reference_logprob, batch, beta=0.1),
    )


def test_npo_equals_two_log_two_before_training():
    adapter = CausalLMAdapter(tiny_model("opt"))
    loss = NPO(ReferenceModel(adapter), beta=0.3)(adapter, random_sequence_batch(seed=22)).loss
    torch.testing.assert_close(loss, torch.tensor(2 / 0.3 * torch.log(torch.tensor(2.0)).item()))


def test_beta_must_be_positive():
    adapter = CausalLMAdapter(tiny_model("opt"))
    with pytest.raises(ValueError, match="beta must be positive"):
        NPO(ReferenceModel(adapter), beta=0.0)
