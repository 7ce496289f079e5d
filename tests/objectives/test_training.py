"""A few Adam steps of each objective move what it targets the right way."""

import torch

from fastunlearn.models import CausalLMAdapter, ReferenceModel
from fastunlearn.objectives import (
    NPO,
    WPN,
    GradientAscent,
    PairedBatch,
    ResponseNLL,
    ga_mismatch_kl,
)
from tests.tiny_models import random_contrastive_batch, random_sequence_batch, tiny_model

STEPS = 6


def train(adapter, objective, batch, steps=STEPS, lr=1e-2):
    """Loss and stats before the first step and after the last one."""
    optimizer = torch.optim.Adam(adapter.model.parameters(), lr=lr)
    history = []
    for step in range(steps + 1):
        optimizer.zero_grad()
        output = objective(adapter, batch)
        history.append({"loss": output.loss.detach(), **output.stats})
        if step < steps:
            output.loss.backward()
            optimizer.step()
    return history[0], history[-1]


def forget_nll(adapter, batch):
    with torch.no_grad():
        return ResponseNLL()(adapter, batch).loss


def test_wpn_pulls_the_positive_toward_the_anchor():
    adapter = CausalLMAdapter(tiny_model("opt"))
    before, after = train(adapter, WPN(temperature=0.1), random_contrastive_batch(seed=80))
    margin_before = before["positive_similarity"] - before["negative_similarity"]
    margin_after = after["positive_similarity"] - after["negative_similarity"]
    assert margin_after > margin_before + 0.05
    assert after["loss"] < before["loss"] and after["accuracy"] > before["accuracy"]


def test_gradient_ascent_raises_the_forget_nll():
    before, after = train(
        CausalLMAdapter(tiny_model("gpt_neo")), GradientAscent(), random_sequence_batch(seed=81)
    )
    assert after["nll"] > before["nll"] + 0.5


def test_npo_raises_the_forget_nll():
    adapter, batch = CausalLMAdapter(tiny_model("llama")), random_sequence_batch(seed=82)
    nll_before = forget_nll(adapter, batch)
    before, after = train(adapter, NPO(ReferenceModel(adapter), beta=0.1), batch)
    assert after["log_ratio"] < before["log_ratio"] - 1.0
    assert forget_nll(adapter, batch) > nll_before


def test_ga_mismatch_kl_forgets_while_the_kl_stays_bounded():
    adapter = CausalLMAdapter(tiny_model("opt"))
    batch = PairedBatch(
        forget=random_sequence_batch(seed=83),
        retain=random_sequence_batch(seed=84),
        mismatch=random_sequence_batch(seed=85),
    )
    before, after = train(adapter, ga_mismatch_kl(ReferenceModel(adapter)), batch)
    assert after["ga/nll"] > before["ga/nll"] + 0.2
    assert after["mismatch"] < before["mismatch"]
    assert before["kl"] == 0 and after["kl"] < 0.5


def test_retain_nll_lowers_the_nll():
    adapter, batch = CausalLMAdapter(tiny_model("llama")), random_sequence_batch(seed=86)
    before, after = train(adapter, ResponseNLL(), batch)
    assert after["loss"] < before["loss"] - 0.5
