import pytest
import torch

from fastunlearn.data import pad_examples, tokenize_pairs

PAIRS = [
    ("How do I bake bread at home?", "Sure, mix flour, water and yeast, then bake it."),
    ("What is the capital of France?", "Paris."),
    ("Tell me a story about a dragon.", "Once upon a time a dragon guarded a golden hoard."),
]
PAD = 2


@pytest.fixture
def examples(any_tokenizer):
    return tokenize_pairs(any_tokenizer, PAIRS)


def test_shapes_dtypes_and_padding_values(examples):
    lengths = [len(example) for example in examples]
    for side in ("left", "right"):
        batch = pad_examples(examples, pad_token_id=PAD, padding_side=side)
        assert set(batch) == {"input_ids", "attention_mask", "prompt_mask", "response_mask"}
        assert batch["input_ids"].shape == (3, max(lengths))
        assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.long
        assert batch["prompt_mask"].dtype == batch["response_mask"].dtype == torch.bool
        assert batch["attention_mask"].sum(dim=1).tolist() == lengths
        padding = batch["attention_mask"] == 0
        assert (batch["input_ids"][padding] == PAD).all()
        assert not (batch["prompt_mask"] | batch["response_mask"])[padding].any()
        # Each row's padding is on the requested side.
        edge = 0 if side == "left" else -1
        assert (batch["attention_mask"][:, edge] == 0).sum() == sum(
            n < max(lengths) for n in lengths
        )


def test_left_and_right_padding_give_the_same_rows(examples):
    left = pad_examples(examples, pad_token_id=PAD, padding_side="left")
    right = pad_examples(examples, pad_token_id=PAD, padding_side="right")
    for row, example in enumerate(examples):
        for batch in (left, right):
            tokens = batch["attention_mask"][row].bool()
            assert batch["input_ids"][row, tokens].tolist() == example.input_ids
            assert batch["prompt_mask"][row, tokens].tolist() == example.prompt_mask
            assert batch["response_mask"][row, tokens].tolist() == example.response_mask


def test_bad_arguments(examples):
    with pytest.raises(ValueError, match="no examples"):
        pad_examples([], pad_token_id=PAD)
    with pytest.raises(ValueError, match="padding_side must be"):
        pad_examples(examples, pad_token_id=PAD, padding_side="middle")
    with pytest.raises(TypeError, match="pad_token_id must be an int, got None"):
        pad_examples(examples, pad_token_id=None)
