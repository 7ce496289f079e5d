"""Tokenized examples -> padded batch tensors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from fastunlearn.data.tokenization import TokenizedExample


def pad_examples(
    examples: Sequence[TokenizedExample],
    pad_token_id: int,
    padding_side: Literal["left", "right"] = "right",
) -> dict[str, torch.Tensor]:
    """Pad examples to the longest one (TypeError for a pad_token_id that is not an int).

    Returns input_ids [B,T] int64 (pad_token_id in padding), attention_mask [B,T] int64
    (1 on tokens), prompt_mask and response_mask [B,T] bool (False in padding). Left
    padding (what batched generation wants) shifts each row's tokens and spans together,
    so a row reads the same either way once its padding is dropped.
    """
    if not examples:
        raise ValueError("no examples to pad")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if not isinstance(pad_token_id, int):
        # The usual cause: a tokenizer without a pad token (GPT-2) passing its None.
        raise TypeError(f"pad_token_id must be an int, got {pad_token_id!r}")
    batch_size, length = len(examples), max(len(example) for example in examples)
    batch = {
        "input_ids": torch.full((batch_size, length), pad_token_id, dtype=torch.long),
        "attention_mask": torch.zeros(batch_size, length, dtype=torch.long),
        "prompt_mask": torch.zeros(batch_size, length, dtype=torch.bool),
        "response_mask": torch.zeros(batch_size, length, dtype=torch.bool),
    }
    for row, example in enumerate(examples):
        tokens = (
            slice(length - len(example), length)
            if padding_side == "left"
            else slice(0, len(example))
        )
        batch["input_ids"][row, tokens] = torch.tensor(example.input_ids, dtype=torch.long)
        batch["attention_mask"][row, tokens] = 1
        batch["prompt_mask"][row, tokens] = torch.tensor(example.prompt_mask, dtype=torch.bool)
        batch["response_mask"][row, tokens] = torch.tensor(example.response_mask, dtype=torch.bool)
    return batch
