"""Readers for the formats users already have, from local files, into plain records.

Every reader takes a path to a .jsonl / .json / .csv / .tsv / .parquet / .txt file or a
folder written by `datasets`' `save_to_disk` (see `loading.load_rows`), and `split`, the
split to take from a folder that holds several. Errors name the file: FileNotFoundError
for a missing path; ValueError for an empty file, missing columns (listing the columns
found and expected) and rows whose text is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import datasets

from fastunlearn.data.loading import load_rows, require_columns

PKU_SAFERLHF_COLUMNS = (
    "prompt",
    "response_0",
    "response_1",
    "is_response_0_safe",
    "is_response_1_safe",
)
# TruthfulQA keeps its several correct answers in one cell, separated by "; ".
TRUTHFULQA_ANSWER_SEPARATOR = ";"


class PromptResponse(NamedTuple):
    """A (prompt, response) pair; unpacks as a tuple."""

    prompt: str
    response: str


@dataclass(frozen=True)
class HarmfulPrompt:
    """A harmful prompt with the responses to unlearn (negatives) and harmless responses
    to move towards (positives), each without duplicates, in file order."""

    prompt: str
    negatives: tuple[str, ...]
    positives: tuple[str, ...]


def read_pku_saferlhf(path: str | Path, *, split: str = "train") -> list[HarmfulPrompt]:
    """PKU-SafeRLHF-style rows -> one HarmfulPrompt per distinct prompt, in file order.

    Columns: prompt, response_0, response_1, is_response_0_safe, is_response_1_safe (the
    flags booleans). The rows of one prompt are merged: unsafe responses become its
    negatives, safe ones its positives. A row whose two responses are both safe adds
    positives only, so a prompt with no unsafe response in any row gets a record with
    empty `negatives`; it is kept because negatives can be sampled from the model itself
    (docs/objectives.md). Keep only those with dataset negatives with
    `[r for r in records if r.negatives]`. Likewise `positives` may be empty, to be
    filled from a refusal list.
    """
    dataset = load_rows(path, split=split)
    require_columns(dataset, PKU_SAFERLHF_COLUMNS, path)
    prompts = _text_column(dataset, "prompt", path)
    negatives: dict[str, dict[str, None]] = {prompt: {} for prompt in prompts}
    positives: dict[str, dict[str, None]] = {prompt: {} for prompt in prompts}
    for which in ("0", "1"):
        responses = _text_column(dataset, f"response_{which}", path)
        flags = _bool_column(dataset, f"is_response_{which}_safe", path)
        for prompt, response, safe in zip(prompts, responses, flags, strict=True):
            # dicts as insertion-ordered sets: duplicates dropped, file order kept
            (positives if safe else negatives)[prompt][response] = None
    return [
        HarmfulPrompt(prompt, tuple(negatives[prompt]), tuple(positives[prompt]))
        for prompt in negatives
    ]


def read_truthfulqa(
    path: str | Path,
    *,
    answers: Literal["best", "correct"] = "best",
    split: str = "train",
) -> list[PromptResponse]:
    """TruthfulQA CSV (Question, Best Answer, Correct Answers, Incorrect Answers, ...) ->
    normal (question, answer) pairs.

    answers="best": one pair per question with its "Best Answer" (what Yao et al. use);
    "correct": one pair per answer listed in "Correct Answers" ("; "-separated).
    """
    dataset = load_rows(path, split=split)
    answer_column = {"best": "Best Answer", "correct": "Correct Answers"}[answers]
    require_columns(dataset, ("Question", answer_column), path)
    questions = _text_column(dataset, "Question", path)
    cells = _text_column(dataset, answer_column, path)
    if answers == "best":
        return [PromptResponse(q, a) for q, a in zip(questions, cells, strict=True)]
    return [
        PromptResponse(question, answer.strip())
        for question, cell in zip(questions, cells, strict=True)
        for answer in cell.split(TRUTHFULQA_ANSWER_SEPARATOR)
        if answer.strip()
    ]


def read_pairs(
    path: str | Path,
    *,
    prompt_field: str = "prompt",
    response_field: str = "response",
    split: str = "train",
) -> list[PromptResponse]:
    """(prompt, response) rows, the two column names configurable."""
    dataset = load_rows(path, split=split)
    require_columns(dataset, (prompt_field, response_field), path)
    prompts = _text_column(dataset, prompt_field, path)
    responses = _text_column(dataset, response_field, path)
    return [PromptResponse(p, r) for p, r in zip(prompts, responses, strict=True)]


def read_prompts(path: str | Path, *, field: str = "prompt", split: str = "train") -> list[str]:
    """A prompt list: one prompt per line of a .txt file (blank lines skipped, whitespace
    stripped), or column `field` of any other format."""
    return _read_text_list(path, field, split)


def read_refusals(path: str | Path, *, field: str = "response", split: str = "train") -> list[str]:
    """A refusal list (harmless responses used as positives): one per line of a .txt
    file (blank lines skipped, whitespace stripped), or column `field` of any other format."""
    return _read_text_list(path, field, split)


def read_corpus(path: str | Path, *, field: str = "text", split: str = "train") -> list[str]:
    """Documents of a text corpus (a book to forget, a retain corpus): a .txt file is one
    document, other formats give one document per row of column `field`. Cut them into
    training blocks with `tokenization.token_blocks`."""
    is_text_file = Path(path).suffix.lower() == ".txt"
    dataset = load_rows(path, split=split, sample_by="document" if is_text_file else "line")
    column = "text" if is_text_file else field
    require_columns(dataset, (column,), path)
    return _text_column(dataset, column, path)


def _read_text_list(path: str | Path, field: str, split: str) -> list[str]:
    if Path(path).suffix.lower() == ".txt":
        lines = [line.strip() for line in load_rows(path)["text"]]
        entries = [line for line in lines if line]
        if not entries:
            raise ValueError(f"{path} is empty: it holds only blank lines")
        return entries
    dataset = load_rows(path, split=split)
    require_columns(dataset, (field,), path)
    return _text_column(dataset, field, path)


def _text_column(dataset: datasets.Dataset, column: str, path: str | Path) -> list[str]:
    """The column as strings; ValueError naming the file and row for a missing or blank cell,
    which would otherwise become an empty span at tokenization, far from its cause."""
    values = list(dataset[column])
    for row, value in enumerate(values):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{path}: row {row} has no text in column {column!r} (got {value!r})")
    return values


def _bool_column(dataset: datasets.Dataset, column: str, path: str | Path) -> list[bool]:
    values = list(dataset[column])
    for row, value in enumerate(values):
        if not isinstance(value, bool):
            raise ValueError(  # noqa: TRY004 - a bad value in the file, not a bad argument
                f"{path}: row {row} of column {column!r} must be true or false, got {value!r}"
            )
    return values
