import pytest
import torch
from transformers import AutoModelForCausalLM, Gemma2Config

from fastunlearn.models import SUPPORTED_MODEL_TYPES, CausalLMAdapter, add_lora, lora_config
from tests.tiny_models import random_sequence_batch, tiny_model


@pytest.mark.parametrize("model_type", SUPPORTED_MODEL_TYPES)
def test_hidden_states_times_head_are_the_models_logits(model_type):
    model = tiny_model(model_type)
    batch = random_sequence_batch(seed=1)
    adapter = CausalLMAdapter(model)
    with torch.no_grad():
        hidden = adapter.hidden_states(batch.input_ids, batch.attention_mask)
        head = adapter.output_head()
        logits = torch.nn.functional.linear(hidden, head.weight, head.bias)
        expected = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_opt_head_is_tied_and_fed_through_project_out():
    model = tiny_model("opt")
    head = CausalLMAdapter(model).output_head()
    assert head.weight is model.get_input_embeddings().weight
    assert head.weight.shape[1] == model.config.word_embed_proj_dim != model.config.hidden_size


@pytest.mark.parametrize("layer", [0, 1, -1])
def test_layer_selects_hf_hidden_states(layer):
    model = tiny_model("llama")
    batch = random_sequence_batch(seed=2)
    adapter = CausalLMAdapter(model)
    with torch.no_grad():
        expected = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            output_hidden_states=True,
        ).hidden_states[layer]
        torch.testing.assert_close(
            adapter.hidden_states(batch.input_ids, batch.attention_mask, layer), expected
        )
        last = adapter.hidden_states(batch.input_ids, batch.attention_mask)
    if layer == -1:
        torch.testing.assert_close(last, expected)


def test_peft_wrapped_model_runs_its_adapters():
    model = add_lora(tiny_model("gpt_neo"), lora_config(rank=4, dropout=0.0))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter)  # peft starts B at zero: make the adapters count
    batch = random_sequence_batch(seed=3)
    adapter = CausalLMAdapter(model)
    assert adapter.is_peft and adapter.model_type == "gpt_neo"
    with torch.no_grad():
        head = adapter.output_head()
        logits = adapter.hidden_states(batch.input_ids, batch.attention_mask) @ head.weight.T
        expected = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        with model.disable_adapter():
            without_adapters = model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask
            ).logits
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(expected, without_adapters)


def test_unsupported_model_type_is_named():
    config = Gemma2Config(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
    )
    with pytest.raises(ValueError, match="'gemma2' is not supported"):
        CausalLMAdapter(AutoModelForCausalLM.from_config(config))


def test_lora_on_the_output_head_is_refused():
    model = add_lora(tiny_model("llama"), lora_config(rank=2, target_modules=["q_proj", "lm_head"]))
    with pytest.raises(ValueError, match="not a plain nn.Linear"):
        CausalLMAdapter(model)
