import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
import yaml

from fastunlearn.engine import ConfigError, UnlearnConfig
from fastunlearn.models import CausalLMAdapter, ReferenceModel, add_lora, lora_config
from fastunlearn.objectives import METHODS, Hold, PairedBatch, Reroute, SequenceBatch, WeightedSum
from fastunlearn.objectives.methods import RROptions
from tests.objectives import plain
from tests.objectives.helpers import (
    ARCHITECTURES,
    assert_same_loss_and_gradients,
    loss_and_gradients,
    nudge,
)
from tests.tiny_models import random_sequence_batch, tiny_model


def rr_objective(reference, **options):
    return WeightedSum(METHODS["rr"].build(RROptions(**options), reference, None))


def paired_batch(seed):
    retain = random_sequence_batch(seed + 1, spans=((2, 5), (4, 7)))
    return PairedBatch(random_sequence_batch(seed), retain=retain)


def reference_states(model, batch):
    with torch.no_grad():
        return plain.hidden_states(model, batch.forget), plain.hidden_states(model, batch.retain)


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_rr_with_frozen_copy_matches_plain_formulation(model_type):
    model, batch = tiny_model(model_type), paired_batch(seed=40)
    original = copy.deepcopy(model)
    adapter = CausalLMAdapter(model)
    options = {"layers": (1, -1), "reroute_weight": 0.7, "hold_weight": 1.3}
    objective = rr_objective(ReferenceModel(adapter), **options)
    nudge(model)
    states = reference_states(original, batch)
    assert_same_loss_and_gradients(
        model,
        lambda: objective(adapter, batch).loss,
        lambda: plain.rr(model, states, batch.forget, batch.retain, *options.values()),
    )


def test_rr_with_lora_reference_matches_plain_formulation():
    model = add_lora(tiny_model("llama"), lora_config(rank=4, dropout=0.0))
    batch = paired_batch(seed=41)
    adapter = CausalLMAdapter(model)
    objective = rr_objective(ReferenceModel(adapter), layers=(0, 2))
    nudge(model.get_base_model().model.layers[0].self_attn.q_proj.lora_B)  # adapters away from zero
    with model.disable_adapter():
        states = reference_states(model, batch)
    assert_same_loss_and_gradients(
        model,
        lambda: objective(adapter, batch).loss,
        lambda: plain.rr(model, states, batch.forget, batch.retain, (0, 2), 1.0, 1.0),
    )


def test_one_forward_serves_every_layer():
    model, batch = tiny_model("llama"), random_sequence_batch(seed=48)
    adapter = CausalLMAdapter(model)
    reroute = Reroute(ReferenceModel(adapter), layers=(0, 1, 2))  # a frozen copy: its own forwards
    forwards = []
    model.model.register_forward_hook(lambda *_: forwards.append(1))
    reroute(adapter, batch)
    assert len(forwards) == 1
    states = adapter.hidden_states_at(batch.input_ids, batch.attention_mask, (0, 1, 2))
    for layer, state in enumerate(states):
        expected = adapter.hidden_states(batch.input_ids, batch.attention_mask, layer)
        torch.testing.assert_close(state, expected)


def test_at_the_reference_hold_is_zero_and_reroute_one():
    model = tiny_model("gpt_neo")
    adapter = CausalLMAdapter(model)
    objective = rr_objective(ReferenceModel(adapter), layers=(1, 2), reroute_weight=0.5)
    output = objective(adapter, paired_batch(seed=42))
    assert output.stats.keys() == {"loss", "reroute", "reroute/cos", "hold"}
    torch.testing.assert_close(output.stats["hold"], torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(output.stats["reroute"], torch.tensor(1.0))
    torch.testing.assert_close(output.stats["reroute/cos"], torch.tensor(1.0))
    torch.testing.assert_close(output.loss, torch.tensor(0.5))
    # The distance's gradient at 0 must stay finite (a NaN would end the run at step one).
    _, gradients = loss_and_gradients(model, lambda: objective(adapter, paired_batch(42)).loss)
    assert all(torch.isfinite(g).all() for g in gradients.values())


def test_a_descent_step_lowers_the_cosine():
    model, batch = tiny_model("llama"), random_sequence_batch(seed=43)
    adapter = CausalLMAdapter(model)
    reroute = Reroute(ReferenceModel(adapter), layers=(1, 2))
    nudge(model, scale=0.05)  # off the maximum at the reference, where the gradient is ~0
    before = reroute(adapter, batch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    before.loss.backward()
    optimizer.step()
    assert reroute(adapter, batch).stats["cos"] < before.stats["cos"] - 1e-3


class FixedStates:
    """Stands in for the model or the reference: hands out given hidden states [L + 1, B, T, H]."""

    def __init__(self, states):
        self.states = states
        self.causal_lm = SimpleNamespace(config=SimpleNamespace(num_hidden_layers=len(states) - 1))

    def hidden_states_at(self, input_ids, attention_mask, layers):
        return [self.states[layer] for layer in layers]


def test_padding_and_prompt_tokens_do_not_count():
    batch = random_sequence_batch(seed=44)
    generator = torch.Generator().manual_seed(0)
    states, ref_states = torch.randn(2, 3, *batch.input_ids.shape, 8, generator=generator)

    def losses(states, ref_states):
        return [
            term(FixedStates(ref_states), layers=(1, 2))(FixedStates(states), batch).loss
            for term in (Reroute, Hold)
        ]

    reroute, hold = losses(states, ref_states)
    new_states, new_ref_states = states.clone(), ref_states.clone()
    padding = ~batch.attention_mask.bool()
    new_states[:, padding] = new_ref_states[:, padding] = float("nan")
    new_reroute, new_hold = losses(new_states, new_ref_states)
    assert torch.equal(new_reroute, reroute) and torch.equal(new_hold, hold)

    prompt = batch.prompt_mask
    new_states[:, prompt] = torch.randn(new_states[:, prompt].shape, generator=generator)
    new_reroute, new_hold = losses(new_states, new_ref_states)
    assert torch.equal(new_reroute, reroute)
    assert not torch.equal(new_hold, hold)  # holding counts every real token, prompt included


def test_states_turned_past_orthogonal_cost_nothing():
    batch = random_sequence_batch(seed=47)
    ref_states = torch.randn(
        3, *batch.input_ids.shape, 8, generator=torch.Generator().manual_seed(1)
    )
    output = Reroute(FixedStates(ref_states), layers=(1, 2))(FixedStates(-ref_states), batch)
    # The ReLU: nothing to gain past orthogonal.
    torch.testing.assert_close(output.loss, torch.tensor(0.0))
    torch.testing.assert_close(output.stats["cos"], torch.tensor(-1.0))


def test_extra_padding_leaves_the_loss_unchanged():
    model, batch = tiny_model("opt"), paired_batch(seed=45)
    adapter = CausalLMAdapter(model)
    objective = rr_objective(ReferenceModel(adapter), layers=(1, 2))
    nudge(model)

    def padded(part):
        fields = (part.input_ids, part.attention_mask, part.prompt_mask, part.response_mask)
        return SequenceBatch(*(F.pad(t, (0, 5)) for t in fields))

    longer = PairedBatch(padded(batch.forget), retain=padded(batch.retain))
    torch.testing.assert_close(objective(adapter, longer).loss, objective(adapter, batch).loss)


@pytest.mark.parametrize("term", [Reroute, Hold])
@pytest.mark.parametrize("layers", [(1, 3), (-4,)])
def test_a_layer_beyond_the_model_is_refused_in_one_line(term, layers):
    adapter = CausalLMAdapter(tiny_model("llama"))  # 2 blocks: hidden states 0..2
    objective = term(ReferenceModel(adapter), layers=layers)
    with pytest.raises(
        ValueError, match=r"^objective\.layers=\[.*\]: \[-?[34]\] beyond the"
    ) as error:
        objective(adapter, random_sequence_batch(seed=46))
    assert "\n" not in str(error.value)
    term(ReferenceModel(adapter), layers=(-3, 2))(adapter, random_sequence_batch(seed=46))


def test_config_round_trip(tmp_path):
    config = UnlearnConfig.load(overrides=["objective.name=rr", "objective.layers=[1]"])
    assert config.objective.options == RROptions(layers=(1,))
    assert config.objective.needs_reference and config.objective.needs_retain
    path = tmp_path / "rr.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    assert UnlearnConfig.load(path).objective.options == RROptions(layers=(1,))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["objective.layers=[]"], "objective: layers must name at least one layer"),
        (["objective.hold_weight=-1"], "hold_weight must be >= 0"),
        (["objective.reroute_weight=0", "objective.hold_weight=0"], "both 0"),
        (["objective.layer=1"], "layer is an option of wpn, not of 'rr'"),
    ],
)
def test_bad_rr_options_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        UnlearnConfig.load(overrides=["objective.name=rr", *overrides])
