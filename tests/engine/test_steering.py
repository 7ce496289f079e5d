"""The training-free baseline: a refusal direction from pooled prompt states, a probe, and
generation steered along the direction."""

import pytest
import torch

from fastunlearn.data.tokenization import prompt_ids
from fastunlearn.engine.steering import fit_refusal_direction, pooled_prompt_states, steered
from fastunlearn.eval import generate_responses
from tests.engine.helpers import HARMFUL, NORMAL
from tests.eval.conftest import tiny_causal_lm

HARMFUL_PROMPTS = [HARMFUL[0][0], HARMFUL[4][0], "Pick the lock of the house."]
BENIGN_PROMPTS = [prompt for prompt, _ in NORMAL]
assert not set(HARMFUL_PROMPTS) & set(BENIGN_PROMPTS)


@pytest.fixture
def llama_like(tokenizer):
    return tiny_causal_lm("llama", tokenizer)


@pytest.mark.parametrize("architecture", ["model", "llama_like"])
def test_pooled_states_match_a_plain_pool_of_each_prompt_alone(architecture, tokenizer, request):
    model = request.getfixturevalue(architecture)
    pooled = pooled_prompt_states(model, tokenizer, HARMFUL_PROMPTS, layer=1, batch_size=2)
    for row, prompt in enumerate(HARMFUL_PROMPTS):
        ids = torch.tensor([prompt_ids(tokenizer, prompt)])
        with torch.no_grad():
            hidden = model(ids, output_hidden_states=True).hidden_states[1][0]
        weights = torch.arange(1, len(hidden) + 1, dtype=torch.float32)
        expected = (weights[:, None] * hidden).sum(0) / weights.sum()
        torch.testing.assert_close(pooled[row], expected, rtol=1e-4, atol=1e-5)


def test_the_probe_separates_its_training_prompts(model, tokenizer):
    refusal = fit_refusal_direction(model, tokenizer, HARMFUL_PROMPTS, BENIGN_PROMPTS, layer=2)
    harmful = refusal.harmful_probability(
        pooled_prompt_states(model, tokenizer, HARMFUL_PROMPTS, 2)
    )
    benign = refusal.harmful_probability(pooled_prompt_states(model, tokenizer, BENIGN_PROMPTS, 2))
    assert harmful.min() > 0.5 > benign.max()
    expected = pooled_prompt_states(model, tokenizer, HARMFUL_PROMPTS, 2).mean(0)
    expected -= pooled_prompt_states(model, tokenizer, BENIGN_PROMPTS, 2).mean(0)
    torch.testing.assert_close(refusal.direction, expected)


@pytest.mark.parametrize("architecture", ["model", "llama_like"])
def test_steering_changes_generation_only_inside_the_block(architecture, tokenizer, request):
    model = request.getfixturevalue(architecture)
    refusal = fit_refusal_direction(model, tokenizer, HARMFUL_PROMPTS, BENIGN_PROMPTS, layer=1)
    prompts = [HARMFUL_PROMPTS[0], BENIGN_PROMPTS[0]]

    def respond():
        return generate_responses(model, tokenizer, prompts, max_new_tokens=6)

    plain = respond()
    with steered(model, refusal, strength=50.0):
        pushed = respond()
    with steered(model, refusal, strength=50.0, gated=True):
        gated = respond()
    assert respond() == plain  # the hook and the wrapper are gone
    assert pushed != plain
    # Gated: only the prompt the probe calls harmful is steered, in the same batch.
    assert gated[0] == pushed[0] and gated[1] == plain[1]
    ids = torch.tensor([prompt_ids(tokenizer, prompts[1])])
    with torch.no_grad():
        logits = model(ids).logits
        with steered(model, refusal, strength=50.0):
            # Plain forwards (perplexity) run unsteered.
            torch.testing.assert_close(model(ids).logits, logits)
