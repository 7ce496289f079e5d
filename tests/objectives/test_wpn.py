import pytest
import torch
import torch.nn.functional as F

from fastunlearn.models import CausalLMAdapter
from fastunlearn.objectives import WPN
from tests.objectives import plain
from tests.objectives.helpers import ARCHITECTURES, BACKENDS, assert_same_loss_and_gradients
from tests.tiny_models import random_contrastive_batch, tiny_model


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_wpn_matches_plain_formulation(model_type, backend):
    model, batch = tiny_model(model_type), random_contrastive_batch(seed=40)
    objective, adapter = WPN(temperature=0.2, backend=backend), CausalLMAdapter(model)
    assert_same_loss_and_gradients(
        model,
        lambda: objective(adapter, batch).loss,
        lambda: plain.wpn(model, batch, temperature=0.2),
    )


@pytest.mark.parametrize(
    "options",
    [
        {"similarity": "dot"},
        {"layer": 1},
        {"candidate_span": "sequence"},
        {"positive_nll_weight": 0.7},
        {"positive_nll_weight": 1.3, "layer": 1},
        {"positive_nll_weight": 1.0, "npair_weight": 0.0},  # the refusal likelihood alone
        {"positive_nll_weight": 0.5, "npair_weight": 2.0},
        # The opening tokens of each positive weigh more (and a window past its end).
        {"positive_nll_weight": 1.0, "opening_tokens": 3, "opening_weight": 4.0},
        {"positive_nll_weight": 1.0, "opening_tokens": 500, "opening_weight": 0.5},
        # Unlikelihood on the negatives' openings, with and without the likelihood term.
        {"positive_nll_weight": 1.0, "opening_tokens": 2, "negative_unlikelihood_weight": 0.7},
        {"opening_tokens": 4, "negative_unlikelihood_weight": 2.0},
    ],
    ids=lambda options: "-".join(options),
)
def test_wpn_options_match_plain_formulation(options):
    model, batch = tiny_model("opt"), random_contrastive_batch(seed=41)
    objective, adapter = WPN(temperature=0.5, backend="torch", **options), CausalLMAdapter(model)
    assert_same_loss_and_gradients(
        model,
        lambda: objective(adapter, batch).loss,
        lambda: plain.wpn(model, batch, temperature=0.5, **options),
    )


@pytest.mark.parametrize("options", [{}, {"opening_tokens": 3, "negative_unlikelihood_weight": 1}])
def test_prompts_with_fewer_negatives(options):
    candidate_mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    model = tiny_model("llama")
    batch = random_contrastive_batch(seed=42, candidate_mask=candidate_mask)
    objective, adapter = WPN(temperature=0.1, **options), CausalLMAdapter(model)
    assert_same_loss_and_gradients(
        model,
        lambda: objective(adapter, batch).loss,
        lambda: plain.wpn(model, batch, temperature=0.1, **options),
    )


def test_stats_describe_the_similarities():
    candidate_mask = torch.tensor([[True, True, True, False], [True, False, True, True]])
    model, temperature = tiny_model("gpt_neo"), 0.1
    batch = random_contrastive_batch(seed=43, candidate_mask=candidate_mask)
    stats = WPN(temperature=temperature)(CausalLMAdapter(model), batch).stats
    with torch.no_grad():
        hidden = plain.forward(model, batch, output_hidden_states=True).hidden_states[-1]
        anchors = plain.weighted_pool(hidden, batch.prompt_mask)[::4]
        similarity = F.cosine_similarity(
            anchors[:, None],
            plain.weighted_pool(hidden, batch.response_mask).view(2, 4, -1),
            dim=-1,
        )
    negatives = similarity[:, 1:][candidate_mask[:, 1:]]
    accuracy = (
        (similarity[:, :1] > similarity.masked_fill(~candidate_mask, -2)[:, 1:])
        .all(1)
        .float()
        .mean()
    )
    torch.testing.assert_close(stats["positive_similarity"], similarity[:, 0].mean())
    torch.testing.assert_close(stats["negative_similarity"], negatives.mean())
    torch.testing.assert_close(stats["accuracy"], accuracy)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="similarity"):
        WPN(similarity="euclidean")
    with pytest.raises(ValueError, match="candidate_span"):
        WPN(candidate_span="prompt")
    with pytest.raises(ValueError, match="positive_nll_weight"):
        WPN(positive_nll_weight=-0.5)
    with pytest.raises(ValueError, match="npair_weight"):
        WPN(npair_weight=float("nan"))
    with pytest.raises(ValueError, match="train nothing"):
        WPN(npair_weight=0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_positive_nll_stat_is_the_positives_mean_nll(backend):
    model, batch = tiny_model("llama"), random_contrastive_batch(seed=44)
    output = WPN(temperature=0.3, positive_nll_weight=2.0, backend=backend)(
        CausalLMAdapter(model), batch
    )
    with torch.no_grad():
        expected = plain.wpn(model, batch, 0.3, positive_nll_weight=1.0) - plain.wpn(
            model, batch, 0.3
        )
    torch.testing.assert_close(output.stats["positive_nll"], expected, rtol=1e-4, atol=1e-5)
