import torch

from fastunlearn.models import add_lora, lora_config
from tests.tiny_models import random_sequence_batch, tiny_model


def test_default_targets_are_peft_per_architecture_defaults():
    assert add_lora(tiny_model("opt")).peft_config["default"].target_modules == {"q_proj", "v_proj"}
    assert add_lora(tiny_model("gpt2")).peft_config["default"].target_modules == {"c_attn"}


def test_config_options_reach_peft():
    config = lora_config(
        rank=4, alpha=8, dropout=0.0, target_modules=("q_proj", "k_proj", "v_proj")
    )
    model = add_lora(tiny_model("llama"), config)
    stored = model.peft_config["default"]
    assert (stored.r, stored.lora_alpha, stored.lora_dropout) == (4, 8, 0.0)
    assert stored.target_modules == {"q_proj", "k_proj", "v_proj"}


def test_a_step_changes_only_adapter_weights():
    model = add_lora(tiny_model("opt"), lora_config(rank=4, dropout=0.0))
    batch = random_sequence_batch(seed=0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=1e-2)
    for _ in range(2):  # the first step only moves lora_B away from zero
        optimizer.zero_grad()
        model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.input_ids
        ).loss.backward()
        optimizer.step()
    for name, parameter in model.named_parameters():
        assert (not torch.equal(before[name], parameter)) == ("lora_" in name), name
    assert sum(p.numel() for p in trainable) < sum(p.numel() for p in model.parameters()) / 5
