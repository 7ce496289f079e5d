import math

import pytest
import torch

from fastunlearn.eval import LM_EVAL_TASKS, lm_eval_benchmarks, metrics, perplexity
from tests.eval.conftest import tiny_causal_lm

TEXTS = [
    "Once upon a time a dragon guarded a golden hoard. Paris is the capital of France.",
    "How do I bake bread at home? Sure, mix flour, water and yeast, then bake it for forty "
    "minutes.",
    "Tell me a story about a dragon.",
]


def _perplexity_by_hand(model, tokenizer, texts, block_length):
    """exp(mean NLL) over every predicted token, one unpadded block at a time, from the logits."""
    ids = []
    for text in texts:
        ids += ([tokenizer.eos_token_id] if ids else []) + tokenizer(
            text, add_special_tokens=False
        )["input_ids"]
    nll, count = 0.0, 0
    for start in range(0, len(ids), block_length):
        block = torch.tensor([ids[start : start + block_length]])
        with torch.no_grad():
            log_probs = model(input_ids=block).logits[0, :-1].double().log_softmax(-1)
        nll -= log_probs.gather(1, block[0, 1:, None]).sum().item()
        count += block.shape[1] - 1
    return math.exp(nll / count)


# block_length 16 and 40 leave a shorter last block, padded next to full ones when batched;
# 1000 holds the whole text in one block.
@pytest.mark.parametrize(
    "model_type, tokenizer_fixture", [("llama", "chat_tokenizer"), ("opt", "opt_tokenizer")]
)
@pytest.mark.parametrize("block_length, batch_size", [(16, 3), (16, 1), (40, 2), (1000, 4)])
def test_perplexity_matches_a_hand_computation(
    model_type, tokenizer_fixture, block_length, batch_size, request
):
    tokenizer = request.getfixturevalue(tokenizer_fixture)
    model = tiny_causal_lm(model_type, tokenizer)
    expected = _perplexity_by_hand(model, tokenizer, TEXTS, block_length)
    measured = perplexity(model, tokenizer, TEXTS, block_length=block_length, batch_size=batch_size)
    assert measured == pytest.approx(expected, rel=1e-5)


def test_the_hand_computation_has_a_short_last_block(chat_tokenizer):
    lengths = [len(ids) for ids in chat_tokenizer(TEXTS, add_special_tokens=False)["input_ids"]]
    total = sum(lengths) + len(TEXTS) - 1
    assert total % 16 > 1 and total % 40 > 1 and total < 1000


def test_perplexity_rejects_a_block_without_prediction(chat_tokenizer, tiny_llama):
    with pytest.raises(ValueError, match="block_length"):
        perplexity(tiny_llama, chat_tokenizer, TEXTS, block_length=1)
    with pytest.raises(ValueError, match="fewer than two tokens"):
        perplexity(tiny_llama, chat_tokenizer, ["a"])


def test_lm_eval_absent_gives_a_clear_skip_message(monkeypatch, tiny_llama, chat_tokenizer):
    monkeypatch.setattr(metrics, "lm_eval_available", lambda: False)
    result = lm_eval_benchmarks(tiny_llama, chat_tokenizer)
    assert list(result) == ["skipped"]
    assert "'lm_eval' package is not installed" in result["skipped"]
    assert "pip install lm-eval" in result["skipped"]
    assert all(task in result["skipped"] for task in LM_EVAL_TASKS)
