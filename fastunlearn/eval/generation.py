"""Greedy, batched generation of responses to prompts (docs/evaluation.md).

Prompts are written the way fastunlearn.data.tokenization writes them for training: the
tokenizer's chat template with a generation prompt when it has one (its own special tokens,
so none are added), else "### Question: {prompt}\\n### Answer:" with the tokenizer's default
special tokens. Batches are left-padded on token ids (`pad_examples`), so the tokenizer's
own padding side and pad token are never changed.

What a model must offer (the seam the tests use): ``generate(input_ids=, attention_mask=,
generation_config=)`` returning the input ids followed by the new ids, and ``parameters()``
(for the device).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from fastunlearn.data import TokenizedExample, pad_examples
from fastunlearn.data.negatives import end_token_ids
from fastunlearn.data.tokenization import prompt_ids
from fastunlearn.models import evaluation_mode


def generate_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 16,
) -> list[str]:
    """Greedy responses to prompts, in order: the new tokens only, decoded without special
    tokens and stripped. Generation stops at max_new_tokens or at an end token (the model's
    generation-config EOS and the tokenizer's EOS, e.g. a chat template's end of turn)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    stop_ids = end_token_ids(model, tokenizer)
    if not stop_ids and tokenizer.pad_token_id is None:
        raise ValueError(
            "the tokenizer has neither an EOS nor a pad token to pad generation batches with"
        )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    # A fresh config, so that sampling settings shipped with the model cannot leak in.
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=pad_id,
        eos_token_id=stop_ids or None,
    )
    device = next(model.parameters()).device
    responses = []
    with torch.no_grad(), evaluation_mode(model):
        for start in range(0, len(prompts), batch_size):
            batch = pad_examples(
                [
                    prompt_only_example(prompt_ids(tokenizer, prompt))
                    for prompt in prompts[start : start + batch_size]
                ],
                pad_id,
                padding_side="left",
            )
            output = model.generate(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                generation_config=config,
            )
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            responses += [
                text.strip()
                for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            ]
    return responses


def prompt_only_example(input_ids: list[int]) -> TokenizedExample:
    """Token ids as an example that is all prompt (to pad into a batch for a forward)."""
    return TokenizedExample.from_spans(
        input_ids, (0, len(input_ids)), (len(input_ids), len(input_ids))
    )
