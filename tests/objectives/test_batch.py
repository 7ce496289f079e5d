import pytest
import torch

from fastunlearn.objectives import ContrastiveBatch, PairedBatch, SequenceBatch
from tests.tiny_models import random_contrastive_batch, random_sequence_batch


def fields(batch):
    return [
        batch.input_ids.clone(),
        batch.attention_mask.clone(),
        batch.prompt_mask.clone(),
        batch.response_mask.clone(),
    ]


def test_a_valid_batch_moves_to_a_device():
    batch = random_sequence_batch(seed=60)
    moved = batch.to("cpu")
    assert moved is not batch and len(moved) == 3 and torch.equal(moved.input_ids, batch.input_ids)
    paired = PairedBatch(forget=random_contrastive_batch(seed=61), retain=batch).to("meta")
    assert (
        paired.forget.input_ids.device.type == "meta"
        and paired.retain.response_mask.device.type == "meta"
    )
    assert paired.forget.num_candidates == 4


def test_empty_response_names_the_example():
    input_ids, attention_mask, prompt_mask, response_mask = fields(random_sequence_batch(seed=62))
    response_mask[1] = False
    with pytest.raises(ValueError, match="example 1 has an empty response span"):
        SequenceBatch(input_ids, attention_mask, prompt_mask, response_mask)


def test_empty_prompt_in_a_contrastive_batch_names_the_sequence():
    batch = random_contrastive_batch(seed=63)
    input_ids, attention_mask, prompt_mask, response_mask = fields(batch)
    prompt_mask[4:] = False  # every row of prompt 1
    with pytest.raises(
        ValueError, match=r"sequence 4 \(prompt 1, the positive\) has an empty prompt span"
    ):
        ContrastiveBatch(input_ids, attention_mask, prompt_mask, response_mask, num_candidates=4)


def test_empty_prompt_is_a_text_block_in_a_sequence_batch():
    input_ids, attention_mask, prompt_mask, _ = fields(random_sequence_batch(seed=64))
    SequenceBatch(input_ids, attention_mask, torch.zeros_like(prompt_mask), attention_mask.bool())


def test_zero_negatives_are_refused():
    batch = random_contrastive_batch(seed=65)
    with pytest.raises(ValueError, match="at least one negative per prompt"):
        ContrastiveBatch(*fields(batch), num_candidates=1)
    mask = torch.tensor([[True, True, True, True], [True, False, False, False]])
    with pytest.raises(ValueError, match="prompt 1 has 0 negatives in candidate_mask"):
        ContrastiveBatch(*fields(batch), num_candidates=4, candidate_mask=mask)
    mask = torch.tensor([[False, True, True, True], [True, True, True, True]])
    with pytest.raises(ValueError, match="prompt 0 leaves out its positive"):
        ContrastiveBatch(*fields(batch), num_candidates=4, candidate_mask=mask)


def test_mismatched_sizes_are_refused():
    input_ids, attention_mask, prompt_mask, response_mask = fields(random_sequence_batch(seed=66))
    with pytest.raises(
        ValueError, match=r"response_mask must have the shape of input_ids \(3, 12\)"
    ):
        SequenceBatch(input_ids, attention_mask, prompt_mask, response_mask[:2])
    batch = random_contrastive_batch(seed=67)
    with pytest.raises(ValueError, match="P \\* 4 rows .* got 7 rows"):
        ContrastiveBatch(*(t[:7] for t in fields(batch)), num_candidates=4)
    with pytest.raises(
        ValueError, match=r"candidate_mask must have shape \[P, 1 \+ N\] = \(2, 4\)"
    ):
        ContrastiveBatch(
            *fields(batch), num_candidates=4, candidate_mask=torch.ones(2, 3, dtype=torch.bool)
        )
    with pytest.raises(
        ValueError, match="needs as many sequences as forget: got 2 mismatch and 3 forget"
    ):
        PairedBatch(
            forget=random_sequence_batch(seed=68),
            mismatch=random_sequence_batch(seed=69, spans=((2, 2),) * 2),
        )


def test_span_layout_is_checked():
    base = random_sequence_batch(seed=70)
    cases = {
        "is not right-padded": lambda ids, am, pm, rm: (
            ids,
            am.roll(2, 1),
            pm.roll(2, 1),
            rm.roll(2, 1),
        ),
        "tokens in both the prompt and the response": lambda ids, am, pm, rm: (
            ids,
            am,
            pm | rm,
            rm,
        ),
        "outside attention_mask": lambda ids, am, pm, rm: (ids, am * (rm.cumsum(1) < 4), pm, rm),
        "response tokens before the end of its prompt": lambda ids, am, pm, rm: (ids, am, rm, pm),
        "prompt_mask must be a bool tensor": lambda ids, am, pm, rm: (ids, am, pm.long(), rm),
        "input_ids must hold integer token ids": lambda ids, am, pm, rm: (ids.float(), am, pm, rm),
    }
    for message, corrupt in cases.items():
        with pytest.raises(ValueError, match=message):
            SequenceBatch(*corrupt(*fields(base)))


def test_a_group_must_share_its_prompt():
    input_ids, attention_mask, prompt_mask, response_mask = fields(
        random_contrastive_batch(seed=71)
    )
    input_ids[6, 0] += 1
    with pytest.raises(ValueError, match=r"sequence 6 \(prompt 1\) does not hold the same prompt"):
        ContrastiveBatch(input_ids, attention_mask, prompt_mask, response_mask, num_candidates=4)


def test_paired_batch_checks_its_parts():
    with pytest.raises(TypeError, match="forget must be a SequenceBatch or ContrastiveBatch"):
        PairedBatch(forget={"input_ids": None})
    with pytest.raises(ValueError, match="forget must then be a SequenceBatch"):
        PairedBatch(
            forget=random_contrastive_batch(seed=72), mismatch=random_sequence_batch(seed=73)
        )
