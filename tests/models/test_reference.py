import pytest
import torch

from fastunlearn.models import (
    CausalLMAdapter,
    ReferenceModel,
    add_lora,
    evaluation_mode,
    lora_config,
)
from tests.tiny_models import random_sequence_batch, tiny_model


def train_a_little(model, batch, steps=2):
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.input_ids
        ).loss.backward()
        optimizer.step()


def original_hidden_states(model, batch):
    with torch.no_grad():
        return CausalLMAdapter(model).hidden_states(batch.input_ids, batch.attention_mask)


@pytest.mark.parametrize("model_type", ["opt", "llama"])
def test_lora_reference_is_the_original_model_exactly(model_type):
    model = tiny_model(model_type)
    batch = random_sequence_batch(seed=4)
    expected = original_hidden_states(model, batch)
    peft_model = add_lora(model, lora_config(rank=4, dropout=0.1))
    adapter = CausalLMAdapter(peft_model)
    reference = ReferenceModel(adapter)
    train_a_little(peft_model, batch)

    # Still in train mode (dropout on): the reference runs in eval mode, adapters disabled.
    hidden = reference.hidden_states(batch.input_ids, batch.attention_mask)
    assert torch.equal(hidden, expected)
    assert not hidden.requires_grad
    assert (
        reference.output_head().weight.data_ptr() == adapter.output_head().weight.data_ptr()
    )  # no copy
    assert peft_model.training and all(m.training for m in peft_model.modules())
    trained = adapter.hidden_states(batch.input_ids, batch.attention_mask)
    assert trained.requires_grad and not torch.allclose(trained, expected)


def test_frozen_copy_reference_without_lora():
    model = tiny_model("gpt_neo")
    batch = random_sequence_batch(seed=5)
    expected = original_hidden_states(model, batch)
    reference = ReferenceModel(CausalLMAdapter(model))
    train_a_little(model, batch)

    assert torch.equal(reference.hidden_states(batch.input_ids, batch.attention_mask), expected)
    frozen = reference.adapter.model
    assert frozen is not model and not frozen.training
    assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert not reference.output_head().weight.requires_grad


def test_evaluation_mode_restores_each_modules_mode():
    model = tiny_model("opt").train()
    model.model.decoder.layers[0].eval()
    modes = [m.training for m in model.modules()]
    with evaluation_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == modes
