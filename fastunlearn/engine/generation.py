"""Responses sampled from the configured model before training (``fastunlearn generate``):
negatives for WPN, and the model's own answers to benign prompts (a retain target)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fastunlearn.data import read_prompts
from fastunlearn.data.negatives import (
    generate_negatives,
    sample_responses,
    save_answers,
    save_negatives,
)
from fastunlearn.engine import safety
from fastunlearn.engine.config import UnlearnConfig
from fastunlearn.engine.data import forget_records
from fastunlearn.engine.overrides import ConfigError
from fastunlearn.engine.unlearner import load_configured_model
from fastunlearn.models import bf16_autocast

# (prompt, response) -> whether the response answers the prompt (False: the model refused).
AnswerFilter = Callable[[list[str], list[str]], list[bool]]


def _writable_destination(path: str | None, key: str, what: str) -> Path:
    """The file ``key`` names, checked writable before the model samples for minutes."""
    if path is None:
        raise ConfigError(f"{key} is not set: it names the JSONL file the {what} are written to")
    destination = Path(path)
    if destination.is_dir():
        raise ConfigError(f"{key}={destination} is a folder; it names a JSONL file")
    safety.check_writable_dir(destination.parent, f"{key}={destination}")
    if destination.exists() and not os.access(destination, os.W_OK):
        raise PermissionError(f"{key}={destination} is not writable")
    return destination


def generate_configured(
    config: UnlearnConfig, *, answers: AnswerFilter | None = None
) -> list[Path]:
    """Both files the config names (data.negatives, data.benign_answers), from one load of
    the model; both destinations are checked before it loads."""
    wanted = [
        key for key in ("negatives", "benign_answers") if getattr(config.data, key) is not None
    ]
    if not wanted:
        raise ConfigError(
            "neither data.negatives nor data.benign_answers is set: they name the JSONL files "
            "the responses are written to"
        )
    for key in wanted:
        _writable_destination(getattr(config.data, key), f"data.{key}", "responses")
    model, tokenizer = load_configured_model(config)
    paths = []
    if "negatives" in wanted:
        paths.append(generate_configured_negatives(config, model, tokenizer))
    if "benign_answers" in wanted:
        paths.append(generate_configured_answers(config, model, tokenizer, answers=answers))
    return paths


def generate_configured_negatives(
    config: UnlearnConfig,
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    progress: bool = True,
) -> Path:
    """Sample data.num_negatives responses for every prompt of data.forget and write them
    to data.negatives (JSONL), with the options of config.generation; returns the path."""
    destination = _writable_destination(config.data.negatives, "data.negatives", "negatives")
    prompts = [record.prompt for record in forget_records(config, with_negatives=False)]
    if model is None:
        model, tokenizer = load_configured_model(config)
    options = config.generation
    with bf16_autocast(model, options.bf16):
        records = generate_negatives(
            model,
            tokenizer,
            prompts,
            config.data.num_negatives,
            max_new_tokens=options.negative_max_new_tokens or options.max_new_tokens,
            temperature=options.temperature,
            top_p=options.top_p,
            batch_size=options.batch_size,
            seed=options.seed,
            progress=progress,
        )
    return save_negatives(destination, records)


def generate_configured_answers(
    config: UnlearnConfig,
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    answers: AnswerFilter | None = None,
    progress: bool = True,
) -> Path:
    """The model's greedy answer to every prompt of data.benign, written to
    data.benign_answers (JSONL pairs, each flagged finished or cut short by
    generation.max_new_tokens); ``answers`` keeps only the responses it calls answers (the
    model's own refusals are no target to keep). Returns the path."""
    destination = _writable_destination(
        config.data.benign_answers, "data.benign_answers", "benign answers"
    )
    if config.data.benign.path is None:
        raise ConfigError("data.benign.path is not set: it names the benign prompts to answer")
    prompts = read_prompts(config.data.benign.path, field=config.data.benign.prompt_field)
    if model is None:
        model, tokenizer = load_configured_model(config)
    options = config.generation
    with bf16_autocast(model, options.bf16):
        sampled = sample_responses(
            model,
            tokenizer,
            prompts,
            1,
            max_new_tokens=options.max_new_tokens,
            temperature=0.0,
            batch_size=options.batch_size,
            progress=progress,
            description="answering benign prompts",
        )
    pairs = [
        (p, response) for p, (response,) in zip(prompts, sampled, strict=True) if response.text
    ]
    if answers is not None:
        keep = answers([p for p, _ in pairs], [r.text for _, r in pairs])
        pairs = [pair for pair, kept in zip(pairs, keep, strict=True) if kept]
    if not pairs:
        raise ValueError(f"data.benign: the model answered none of the {len(prompts)} prompts")
    return save_answers(destination, pairs)
