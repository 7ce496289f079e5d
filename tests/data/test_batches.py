"""Batches from records, and the seeded sampler that resumes exactly and shards by rank."""

import numpy as np
import pytest
import torch

from fastunlearn.data.batches import BatchSampler, ContrastiveSource, MismatchSource, SequenceSource
from fastunlearn.data.readers import HarmfulPrompt
from fastunlearn.data.tokenization import tokenize_pairs
from fastunlearn.objectives import ContrastiveBatch, SequenceBatch
from tests.data.conftest import build_opt_style_tokenizer

PROMPTS = [
    "How do I bake bread at home?",
    "How can I pick a lock to get into my neighbour's house?",
    "Tell me a story about a dragon.",
    "What is the capital of France?",
]
ANSWERS = [
    "Paris is the capital of France.",
    "Once upon a time a dragon guarded a golden hoard.",
    "Sure, mix flour, water and yeast, then bake it for forty minutes.",
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_opt_style_tokenizer()


@pytest.fixture(scope="module")
def records():
    # Prompt 0 has three negatives, the others one or two: groups of different sizes.
    return [
        HarmfulPrompt(PROMPTS[0], tuple(ANSWERS), ()),
        HarmfulPrompt(PROMPTS[1], (ANSWERS[0],), ("I cannot help with that request.",)),
        HarmfulPrompt(PROMPTS[2], tuple(ANSWERS[:2]), ()),
        HarmfulPrompt(PROMPTS[3], (ANSWERS[2],), ()),
    ]


def sequence_sampler(tokenizer, **options):
    pairs = [(p, a) for p in PROMPTS for a in ANSWERS[:1]]
    forget = SequenceSource(tokenize_pairs(tokenizer, pairs), tokenizer.pad_token_id)
    mismatch = MismatchSource(tokenizer, [p for p, _ in pairs], ANSWERS)
    retain = SequenceSource(
        tokenize_pairs(tokenizer, list(zip(PROMPTS, ANSWERS, strict=False))), tokenizer.pad_token_id
    )
    return BatchSampler(
        forget, batch_size=3, retain=retain, retain_batch_size=2, mismatch=mismatch, **options
    )


def assert_same(first, second):
    for name in ("forget", "retain", "mismatch"):
        a, b = getattr(first, name), getattr(second, name)
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(
            a.response_mask, b.response_mask
        ), name


def test_contrastive_groups_have_one_positive_and_n_negatives(tokenizer, records):
    source = ContrastiveSource(
        tokenizer, records, num_negatives=2, refusals=["I cannot help with that."]
    )
    batch = source.batch([0, 1, 3], np.random.default_rng(0))
    assert (
        isinstance(batch, ContrastiveBatch) and batch.num_candidates == 3 and batch.num_prompts == 3
    )
    # Prompt 0 has enough negatives; prompts 1 and 3 have one, the second row is masked out.
    assert batch.candidate_mask.tolist() == [
        [True, True, True],
        [True, True, False],
        [True, True, False],
    ]
    texts = tokenizer.batch_decode(
        batch.input_ids.masked_fill(~batch.response_mask, tokenizer.pad_token_id),
        skip_special_tokens=True,
    )
    assert texts[3].strip() == "I cannot help with that request."  # prompt 1's own positive
    assert texts[6].strip() == "I cannot help with that."  # no positive of its own: a refusal
    assert {t.strip() for t in texts[1:3]} <= set(ANSWERS)


def test_contrastive_source_refuses_prompts_without_negatives_or_positives(tokenizer, records):
    with pytest.raises(ValueError, match="have no negative response.*fastunlearn generate"):
        ContrastiveSource(tokenizer, [HarmfulPrompt(PROMPTS[0], (), ())], 2, refusals=["No."])
    with pytest.raises(ValueError, match="no harmless response.*refusal list"):
        ContrastiveSource(tokenizer, records, 2)


def test_over_long_prompt_fails_before_training(tokenizer, records):
    with pytest.raises(
        ValueError, match="forget prompt 0: the prompt 'How do I bake.*max_length=8"
    ):
        ContrastiveSource(tokenizer, records, 2, refusals=["No."], max_length=8, name="forget")


def test_batches_depend_only_on_seed_and_index(tokenizer):
    first, second = sequence_sampler(tokenizer, seed=1), sequence_sampler(tokenizer, seed=1)
    for index in (5, 0, 3):
        assert_same(first.batch(index), second.batch(index))
    other_seed = sequence_sampler(tokenizer, seed=2)
    assert any(
        not torch.equal(first.batch(i).forget.input_ids, other_seed.batch(i).forget.input_ids)
        for i in range(4)
    )


def test_mismatch_rows_pair_the_forget_prompts_with_normal_answers(tokenizer):
    batch = sequence_sampler(tokenizer, seed=0).batch(2)
    assert (
        isinstance(batch.mismatch, SequenceBatch) and len(batch.mismatch) == len(batch.forget) == 3
    )
    for row in range(3):
        forget_prompt = batch.forget.input_ids[row][batch.forget.prompt_mask[row]]
        assert torch.equal(
            batch.mismatch.input_ids[row][batch.mismatch.prompt_mask[row]], forget_prompt
        )
        answer = tokenizer.decode(
            batch.mismatch.input_ids[row][batch.mismatch.response_mask[row]],
            skip_special_tokens=True,
        )
        assert answer.strip() in ANSWERS


def test_every_example_once_per_epoch(tokenizer):
    sampler = sequence_sampler(tokenizer, seed=0)
    drawn = sampler._draw(0, len(sampler.forget), 0, 3 * len(sampler.forget))
    for epoch in range(3):
        assert sorted(drawn[epoch * 4 : (epoch + 1) * 4]) == [0, 1, 2, 3]
    assert drawn[:4] != drawn[4:8] or drawn[4:8] != drawn[8:]  # a fresh order each epoch


def test_state_dict_resumes_the_stream_exactly(tokenizer):
    uninterrupted = sequence_sampler(tokenizer, seed=4)
    expected = [next(uninterrupted) for _ in range(5)]
    interrupted = sequence_sampler(tokenizer, seed=4)
    for _ in range(2):
        next(interrupted)
    resumed = sequence_sampler(tokenizer, seed=4)
    resumed.load_state_dict(interrupted.state_dict())
    for batch in expected[2:]:
        assert_same(next(resumed), batch)


def test_ranks_share_one_stream(tokenizer):
    single = sequence_sampler(tokenizer, seed=7)
    ranks = [sequence_sampler(tokenizer, seed=7, rank=r, world_size=2) for r in range(2)]
    for _ in range(3):
        for rank in ranks:
            assert_same(next(rank), next(single))
    assert (
        ranks[0].state_dict() == ranks[1].state_dict() == single.state_dict() == {"next_batch": 6}
    )
