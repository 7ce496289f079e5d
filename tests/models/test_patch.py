"""apply_fastunlearn: a patched HF model's loss and gradients are HF's own, computed without
logits; gradient ascent by scale; generation and other models untouched."""

import copy

import pytest
import torch

from fastunlearn import apply_fastunlearn
from fastunlearn.models import add_lora, lora_config
from tests.tiny_models import VOCAB, tiny_model


def batch(seed: int, rows: int = 3, length: int = 11):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB, (rows, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, -3:] = 0  # right padding in one row
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[1, :4] = -100  # a prompt left out of the loss
    return input_ids, attention_mask, labels


def loss_and_grads(model, input_ids, attention_mask, labels, **kwargs):
    model.zero_grad()
    output = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
    output.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return output, grads


@pytest.mark.parametrize("model_type", ["opt", "llama", "gpt2", "gpt_neo", "qwen2"])
@pytest.mark.parametrize("scale", [1.0, -1.0])
def test_loss_and_gradients_are_hfs_times_scale(model_type, scale):
    reference = tiny_model(model_type)
    patched = apply_fastunlearn(copy.deepcopy(reference), scale=scale)
    inputs = batch(seed=torch.randint(0, 2**31 - 1, ()).item())
    expected, expected_grads = loss_and_grads(reference, *inputs)
    got, grads = loss_and_grads(patched, *inputs)
    assert got.logits is None  # never built
    torch.testing.assert_close(got.loss, scale * expected.loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, scale * expected_grads[name], rtol=1e-4, atol=1e-6)


def test_num_items_in_batch_divides_the_summed_loss():
    # The Trainer passes it under gradient accumulation: every token then weighs the same.
    model = apply_fastunlearn(tiny_model("llama"))
    input_ids, attention_mask, labels = batch(seed=1)
    counted = int((labels[:, 1:] != -100).sum())
    mean = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    summed = model(
        input_ids=input_ids, attention_mask=attention_mask, labels=labels, num_items_in_batch=50
    ).loss
    torch.testing.assert_close(summed, mean * counted / 50)


def test_without_labels_the_model_is_untouched():
    reference = tiny_model("opt")
    patched = apply_fastunlearn(copy.deepcopy(reference))
    input_ids, attention_mask, _ = batch(seed=2)
    torch.testing.assert_close(
        patched(input_ids=input_ids, attention_mask=attention_mask).logits,
        reference(input_ids=input_ids, attention_mask=attention_mask).logits,
    )
    generated = patched.generate(input_ids[:1], max_new_tokens=3, do_sample=False)
    expected = reference.generate(input_ids[:1], max_new_tokens=3, do_sample=False)
    assert torch.equal(generated, expected)


def test_a_peft_model_trains_its_adapters_through_the_fused_loss():
    model = add_lora(tiny_model("llama"), lora_config(4, 8, 0.0, ["q_proj", "v_proj"]))
    apply_fastunlearn(model, scale=-1.0)
    input_ids, attention_mask, labels = batch(seed=3)
    output = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    output.loss.backward()
    trained = [n for n, p in model.named_parameters() if p.grad is not None]
    assert trained and all("lora_" in name for name in trained)
    assert output.loss < 0  # ascent: the negated NLL


def test_patching_twice_or_an_unsupported_model_is_refused():
    model = apply_fastunlearn(tiny_model("opt"))
    with pytest.raises(ValueError, match="patched already"):
        apply_fastunlearn(model)
    gemma = tiny_model("llama")
    gemma.config.model_type = "gemma2"  # its logits are soft-capped: not a plain linear head
    with pytest.raises(ValueError, match="'gemma2' is not supported"):
        apply_fastunlearn(gemma)
