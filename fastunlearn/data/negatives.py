"""Responses from the model itself, generated once before training and kept in JSONL files
that runs reuse (docs/objectives.md): negatives, its own harmful answers, which should go (one
row per prompt {"prompt": str, "negatives": [str, ...]}), and its own answers to benign
prompts, which should stay (one row per prompt {"prompt": str, "response": str}).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fastunlearn.data.batches import padding_id
from fastunlearn.data.collate import pad_examples
from fastunlearn.data.loading import load_rows, require_columns
from fastunlearn.data.readers import HarmfulPrompt, read_pairs
from fastunlearn.data.tokenization import TokenizedExample, prompt_ids

NEGATIVES_COLUMNS = ("prompt", "negatives")


class Sampled(NamedTuple):
    """One generated response; ``finished`` when the model ended it itself (an end token
    came before the token budget ran out)."""

    text: str
    finished: bool


@torch.no_grad()
def sample_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    per_prompt: int,
    *,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
    description: str = "generating",
) -> list[list[Sampled]]:
    """``per_prompt`` sampled responses to each prompt (batched, left-padded), stripped;
    ``temperature`` 0 takes the greedy response instead (then per_prompt must be 1).

    Seeded: the same model, prompts and options give the same responses; the global RNG is
    left as it was.
    """
    if per_prompt < 1 or batch_size < 1:
        raise ValueError(
            f"responses per prompt and batch_size must be positive, got {per_prompt}, {batch_size}"
        )
    greedy = temperature == 0
    if greedy and per_prompt != 1:
        raise ValueError(f"greedy decoding (temperature 0) gives one response, not {per_prompt}")
    sampling = {} if greedy else {"temperature": temperature, "top_p": top_p}
    pad = padding_id(tokenizer)
    stops = torch.tensor(end_token_ids(model, tokenizer))
    device = next(model.parameters()).device
    responses = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        starts = range(0, len(prompts), batch_size)
        for start in tqdm(starts, desc=description, disable=not progress):
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
                do_sample=not greedy,
                **sampling,
                max_new_tokens=max_new_tokens,
                num_return_sequences=per_prompt,
                pad_token_id=pad,
            )
            new_tokens = output[:, batch["input_ids"].shape[1] :].cpu()
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            finished = torch.isin(new_tokens, stops).any(dim=1).tolist()
            responses += [
                [
                    Sampled(texts[i].strip(), finished[i])
                    for i in range(row * per_prompt, (row + 1) * per_prompt)
                ]
                for row in range(len(chunk))
            ]
    return responses


def end_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The tokens that end generation: the model's generation-config EOS and the tokenizer's."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    configured = configured if isinstance(configured, list) else [configured]
    return [i for i in dict.fromkeys([*configured, tokenizer.eos_token_id]) if i is not None]


def generate_negatives(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    num_negatives: int,
    **options,
) -> list[HarmfulPrompt]:
    """``num_negatives`` sampled responses per prompt (``sample_responses``' options) as
    records; blank and repeated responses are dropped, so a prompt may get fewer."""
    options.setdefault("description", "generating negatives")
    return [
        HarmfulPrompt(prompt, tuple(dict.fromkeys(r.text for r in sampled if r.text)), ())
        for prompt, sampled in zip(
            prompts,
            sample_responses(model, tokenizer, prompts, num_negatives, **options),
            strict=True,
        )
    ]


def save_negatives(path: str | Path, records: Sequence[HarmfulPrompt]) -> Path:
    """Write the negatives file atomically (a temporary file renamed into place)."""
    return _write_jsonl(
        path, ({"prompt": record.prompt, "negatives": list(record.negatives)} for record in records)
    )


def save_answers(path: str | Path, answers: Sequence[tuple[str, Sampled]]) -> Path:
    """Write (prompt, response) rows atomically, as the ``pairs`` format reads them, with
    the response's ``finished`` flag beside it (read back by read_answers)."""
    return _write_jsonl(
        path,
        ({"prompt": p, "response": r.text, "finished": r.finished} for p, r in answers),
    )


def read_answers(path: str | Path) -> list[tuple[str, Sampled]]:
    """(prompt, response) rows of a pairs file; a ``finished`` column, where there is one,
    says which responses were cut short (every response counts as finished without it)."""
    dataset = load_rows(path)
    pairs = read_pairs(path)
    flags = dataset["finished"] if "finished" in dataset.column_names else [True] * len(pairs)
    for row, flag in enumerate(flags):
        if not isinstance(flag, bool):
            raise ValueError(  # noqa: TRY004 - a bad value in the file, not a bad argument
                f"{path}: row {row} has finished={flag!r}; it must be true or false"
            )
    return [(p, Sampled(r, f)) for (p, r), f in zip(pairs, flags, strict=True)]


def _write_jsonl(path: str | Path, rows) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    with open(staging, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
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
