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
from fastunlearn.data.tokenization import TokenizedExample, prompt_ids

NEGATIVES_COLUMNS = ("prompt", "negatives")


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
    """prompt -> negatives from a file written by save_negatives (rows of one prompt merged).

    ValueError naming the file and row for a blank prompt or a negative that is not text or
    is blank: checked here, as later they would pass for the forget file's own.
    """
    dataset = load_rows(path)
    require_columns(dataset, NEGATIVES_COLUMNS, path)
    negatives: dict[str, dict[str, None]] = {}
    for row, (prompt, responses) in enumerate(
        zip(dataset["prompt"], dataset["negatives"], strict=True)
    ):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{path}: row {row} has no prompt text (got {prompt!r})")
        if not isinstance(responses, list):
            raise ValueError(  # noqa: TRY004 - a bad value in the file, not a bad argument
                f"{path}: row {row} must hold a list of negatives, got {responses!r}"
            )
        for index, response in enumerate(responses):
            if not isinstance(response, str):
                raise ValueError(  # noqa: TRY004 - a bad value in the file, not a bad argument
                    f"{path}: row {row} negative {index} is not text (got {response!r})"
                )
            if not response.strip():
                raise ValueError(f"{path}: row {row} negative {index} is blank")
        # dicts as insertion-ordered sets: duplicates dropped, file order kept
        negatives.setdefault(prompt, {}).update(dict.fromkeys(responses))
    return {prompt: tuple(responses) for prompt, responses in negatives.items()}


def attach_negatives(
    records: Sequence[HarmfulPrompt],
    negatives: dict[str, tuple[str, ...]],
    source: str = "negatives",
) -> list[HarmfulPrompt]:
    """Each record with the sampled negatives of its prompt added to its own.

    Prompts absent from ``negatives``, or left with no negative at all, are dropped with a
    warning; ValueError if none is left. ``source`` (the negatives file) is named in both.
    ValueError too when no prompt of ``negatives`` is a forget prompt (sampled for other
    data), also when the records have negatives of their own; a warning when some are not.
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
    forget_prompts = {record.prompt for record in records}
    unused = [prompt for prompt in negatives if prompt not in forget_prompts]
    if unused and len(unused) == len(negatives):
        raise ValueError(
            f"{source}: none of its {len(negatives)} prompts is a forget prompt "
            f"(first: {unused[0]!r}); was it generated from this forget data?"
        )
    if unused:
        warnings.warn(
            f"{source}: {len(unused)} of its {len(negatives)} prompts are not forget prompts "
            f"and go unused (first: {unused[0]!r})",
            stacklevel=2,
        )
    if missing:
        warnings.warn(
            f"{source}: {len(missing)} forget prompt(s) have no negative and are left out "
            f"(first: {missing[0]!r})",
            stacklevel=2,
        )
    return merged
