"""Negatives sampled from the model itself: its own harmful answers are what should go
(docs/objectives.md). Sampled once before training and kept in a JSONL file, one row per prompt
{"prompt": str, "negatives": [str, ...]}, so that runs reuse them.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fastunlearn.data.batches import padding_id
from fastunlearn.data.collate import pad_examples
from fastunlearn.data.loading import load_rows, require_columns
from fastunlearn.data.readers import HarmfulPrompt
from fastunlearn.data.tokenization import PLAIN_PROMPT_TEMPLATE, TokenizedExample

NEGATIVES_COLUMNS = ("prompt", "negatives")


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """The tokens a response is generated after: the prompt span of tokenize_pair (chat
    template with its generation prompt, else the plain "### Question: ... ### Answer:")."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(PLAIN_PROMPT_TEMPLATE.format(prompt=prompt))["input_ids"]


@torch.no_grad()
def generate_negatives(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    num_negatives: int,
    *,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
) -> list[HarmfulPrompt]:
    """Sample ``num_negatives`` responses per prompt from ``model`` (batched, left-padded).

    Seeded: the same model, prompts and options give the same responses; the global RNG is
    left as it was. Blank and repeated responses are dropped, so a prompt may get fewer.
    """
    if num_negatives < 1 or batch_size < 1:
        raise ValueError(
            f"num_negatives and batch_size must be positive, got {num_negatives}, {batch_size}"
        )
    pad = padding_id(tokenizer)
    device = next(model.parameters()).device
    records = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        starts = range(0, len(prompts), batch_size)
        for start in tqdm(starts, desc="generating negatives", disable=not progress):
            chunk = prompts[start : start + batch_size]
            examples = [
                TokenizedExample(ids, [True] * len(ids), [False] * len(ids))
                for ids in (prompt_ids(tokenizer, prompt) for prompt in chunk)
            ]
            # Left padding: every row's new tokens then start at the same column.
            batch = pad_examples(examples, pad, "left")
            output = model.generate(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                max_new_tokens=max_new_tokens,
                num_return_sequences=num_negatives,
                pad_token_id=pad,
            )
            texts = tokenizer.batch_decode(
                output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
            )
            for row, prompt in enumerate(chunk):
                sampled = (
                    text.strip() for text in texts[row * num_negatives : (row + 1) * num_negatives]
                )
                records.append(
                    HarmfulPrompt(prompt, tuple(dict.fromkeys(t for t in sampled if t)), ())
                )
    return records


def save_negatives(path: str | Path, records: Sequence[HarmfulPrompt]) -> Path:
    """Write the JSONL file atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    with open(staging, "w", encoding="utf-8") as handle:
        handle.writelines(
            json.dumps({"prompt": record.prompt, "negatives": list(record.negatives)}) + "\n"
            for record in records
        )
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, path)
    return path


def read_negatives(path: str | Path) -> dict[str, tuple[str, ...]]:
    """prompt -> negatives from a file written by save_negatives."""
    dataset = load_rows(path)
    require_columns(dataset, NEGATIVES_COLUMNS, path)
    negatives = {}
    for row, (prompt, responses) in enumerate(
        zip(dataset["prompt"], dataset["negatives"], strict=True)
    ):
        if not isinstance(prompt, str) or not isinstance(responses, list):
            raise ValueError(  # noqa: TRY004 - a bad value in the file, not a bad argument
                f"{path}: row {row} must hold a prompt string and a list of negatives"
            )
        negatives[prompt] = tuple(responses)
    return negatives


def attach_negatives(
    records: Sequence[HarmfulPrompt],
    negatives: dict[str, tuple[str, ...]],
    source: str = "negatives",
) -> list[HarmfulPrompt]:
    """Each record with the sampled negatives of its prompt added to its own.

    Prompts absent from ``negatives``, or left with no negative at all, are dropped with a
    warning; ValueError if none is left.
    """
    merged, missing = [], []
    for record in records:
        combined = tuple(dict.fromkeys((*record.negatives, *negatives.get(record.prompt, ()))))
        if combined:
            merged.append(replace(record, negatives=combined))
        else:
            missing.append(record.prompt)
    if not merged:
        raise ValueError(
            f"{source}: none of the {len(records)} forget prompts has a negative; "
            "was it generated from these prompts?"
        )
    if missing:
        warnings.warn(
            f"{source}: {len(missing)} forget prompt(s) have no negative and are left out "
            f"(first: {missing[0]!r})",
            stacklevel=2,
        )
    return merged
