"""Copyright leakage on known cases: an exact reproducer, a disjoint generator, bad input."""

import pytest
import torch

from fastunlearn.eval import (
    copyright_leakage,
    copyright_metrics,
    leakage_windows,
    longest_verbatim_match,
)
from tests.eval.conftest import build_opt_style_tokenizer, tiny_causal_lm

TEXT = (
    "Once upon a time a dragon guarded a golden hoard. Paris is the capital of France. "
    "Sure, mix flour, water and yeast, then bake it for forty minutes. "
    "Tell me a story about a dragon."
)


class CorpusReproducer(torch.nn.Module):
    """generate() appends what follows each prefix in the corpus (the true continuation),
    or, with ``disjoint_ids``, those ids instead."""

    def __init__(self, corpus_ids, disjoint_ids=None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))  # parameters() gives the device
        self.corpus_ids, self.disjoint_ids = corpus_ids, disjoint_ids

    def generate(self, input_ids, attention_mask, generation_config):
        count = generation_config.max_new_tokens
        rows = []
        for prefix in input_ids.tolist():
            if self.disjoint_ids is not None:
                rows.append(prefix + self.disjoint_ids[:count])
                continue
            start = next(
                i
                for i in range(len(self.corpus_ids))
                if self.corpus_ids[i : i + len(prefix)] == prefix
            )
            rows.append(prefix + self.corpus_ids[start + len(prefix) : start + len(prefix) + count])
        return torch.tensor(rows)


@pytest.fixture(scope="module")
def tokenizer():
    return build_opt_style_tokenizer()


@pytest.fixture(scope="module")
def corpus_ids(tokenizer):
    return tokenizer(TEXT, add_special_tokens=False)["input_ids"]


def test_windows_cut_the_text_into_prefix_and_continuation(tokenizer, corpus_ids):
    windows = leakage_windows(tokenizer, [TEXT], 12, 4)
    assert all(len(prefix) == 4 and len(continuation) == 8 for prefix, continuation in windows)
    assert windows[0][0] + windows[0][1] == corpus_ids[:12]
    assert len(leakage_windows(tokenizer, [TEXT], 12, 4, max_windows=2)) == 2


def test_exact_reproduction_scores_one(tokenizer, corpus_ids):
    result = copyright_leakage(
        CorpusReproducer(corpus_ids),
        tokenizer,
        [TEXT],
        window_length=12,
        prefix_length=4,
        batch_size=3,
    )
    assert result.windows == len(result.rouge_l_per_window) > 1
    assert result.rouge_l == pytest.approx(1.0)
    assert result.verbatim_tokens == 8 and result.verbatim_share == 1.0
    assert result.generated == result.references


def test_disjoint_generation_scores_zero(tokenizer):
    disjoint = (
        tokenizer("### Question: ### Answer: ### Question:", add_special_tokens=False)["input_ids"]
        * 4
    )
    result = copyright_leakage(
        CorpusReproducer([], disjoint), tokenizer, [TEXT], window_length=12, prefix_length=4
    )
    assert result.rouge_l == 0.0
    assert result.verbatim_tokens == 0


def test_longest_verbatim_match():
    assert longest_verbatim_match([1, 2, 3, 4, 5], [9, 2, 3, 4, 8]) == 3
    assert longest_verbatim_match([1, 1, 1], [2, 2]) == 0
    assert longest_verbatim_match([], [1]) == 0


def test_real_model_generates_full_continuations(tokenizer):
    model = tiny_causal_lm("opt", tokenizer)
    metrics = copyright_metrics(
        model, tokenizer, [TEXT], [TEXT[:60]], window_length=12, prefix_length=4
    )
    assert 0.0 <= metrics["rouge_l"] <= 1.0 and 0 <= metrics["verbatim_share"] <= 1.0
    assert metrics["perplexity_forget"] > 1 and metrics["perplexity_heldout"] > 1


@pytest.mark.parametrize("prefix_length", [0, 12, 20])
def test_prefix_must_leave_a_continuation(tokenizer, prefix_length):
    with pytest.raises(ValueError, match="prefix_length must lie in"):
        leakage_windows(tokenizer, [TEXT], 12, prefix_length)


def test_text_shorter_than_a_window(tokenizer):
    with pytest.raises(ValueError, match="fewer than one window of 64"):
        copyright_leakage(
            CorpusReproducer([]),
            tokenizer,
            ["Paris is the capital of France."],
            window_length=64,
            prefix_length=32,
        )
