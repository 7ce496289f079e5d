import copy

import pytest
import torch
import torch.nn.functional as F

from fastunlearn.models import CausalLMAdapter, ReferenceModel, add_lora, lora_config
from fastunlearn.objectives import RetainKL, SequenceBatch
from tests.objectives import plain
from tests.objectives.helpers import ARCHITECTURES, assert_same_loss_and_gradients, nudge
from tests.tiny_models import random_sequence_batch, tiny_model


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_kl_with_frozen_copy_matches_plain_formulation(model_type):
    model, batch = tiny_model(model_type), random_sequence_batch(seed=30)
    original = copy.deepcopy(model)
    adapter = CausalLMAdapter(model)
    objective = RetainKL(ReferenceModel(adapter), chunk_size=5)  # several checkpointed chunks
    nudge(model)
    with torch.no_grad():
        reference_logits = plain.forward(original, batch).logits
    assert_same_loss_and_gradients(
        model,
        lambda: objective(adapter, batch).loss,
        lambda: plain.retain_kl(model, reference_logits, batch),
    )


def test_kl_with_lora_reference_matches_plain_formulation():
    model = add_lora(tiny_model("opt"), lora_config(rank=4, dropout=0.0))
    batch = random_sequence_batch(seed=31)
    adapter = CausalLMAdapter(model)
    objective = RetainKL(ReferenceModel(adapter), chunk_size=7)
    nudge(model.get_base_model().model.decoder.layers[1].self_attn.v_proj.lora_B)
    with torch.no_grad(), model.disable_adapter():
        reference_logits = plain.forward(model, batch).logits
    assert_same_loss_and_gradients(
        model,
        lambda: objective(adapter, batch).loss,
        lambda: plain.retain_kl(model, reference_logits, batch),
    )


def test_chunking_does_not_change_the_kl():
    model, batch = tiny_model("gpt_neo"), random_sequence_batch(seed=34)
    adapter = CausalLMAdapter(model)
    reference = ReferenceModel(adapter)
    nudge(model)
    whole = RetainKL(reference)(adapter, batch).loss
    torch.testing.assert_close(RetainKL(reference, chunk_size=4)(adapter, batch).loss, whole)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        RetainKL(reference, chunk_size=0)


def test_padding_does_not_count():
    model, batch = tiny_model("llama"), random_sequence_batch(seed=32)
    adapter = CausalLMAdapter(model)
    objective = RetainKL(ReferenceModel(adapter))
    nudge(model)
    padded = SequenceBatch(
        *(
            F.pad(t, (0, 9))
            for t in (batch.input_ids, batch.attention_mask, batch.prompt_mask, batch.response_mask)
        )
    )
    torch.testing.assert_close(objective(adapter, padded).loss, objective(adapter, batch).loss)


def test_kl_to_itself_is_zero():
    adapter = CausalLMAdapter(tiny_model("gpt_neo"))
    loss = RetainKL(ReferenceModel(adapter))(adapter, random_sequence_batch(seed=33)).loss
    torch.testing.assert_close(loss, torch.tensor(0.0), atol=1e-6, rtol=0)
