"""Negatives for WPN sampled from the configured model (``fastunlearn generate``)."""

from __future__ import annotations

import os
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fastunlearn.data.negatives import generate_negatives, save_negatives
from fastunlearn.engine import safety
from fastunlearn.engine.config import UnlearnConfig
from fastunlearn.engine.data import forget_records
from fastunlearn.engine.overrides import ConfigError
from fastunlearn.engine.unlearner import load_configured_model


def generate_configured_negatives(
    config: UnlearnConfig,
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    progress: bool = True,
) -> Path:
    """Sample data.num_negatives responses for every prompt of data.forget and write them
    to data.negatives (JSONL), with the options of config.generation; returns the path."""
    if config.data.negatives is None:
        raise ConfigError(
            "data.negatives is not set: it names the JSONL file the negatives are written to"
        )
    prompts = [record.prompt for record in forget_records(config, with_negatives=False)]
    destination = Path(config.data.negatives)
    if destination.is_dir():
        raise ConfigError(f"data.negatives={destination} is a folder; it names a JSONL file")
    # Before the model loads and samples for minutes: the file must be writable at the end.
    safety.check_writable_dir(destination.parent, f"data.negatives={destination}")
    if destination.exists() and not os.access(destination, os.W_OK):
        raise PermissionError(f"data.negatives={destination} is not writable")
    if model is None:
        model, tokenizer = load_configured_model(config)
    options = config.generation
    records = generate_negatives(
        model,
        tokenizer,
        prompts,
        config.data.num_negatives,
        max_new_tokens=options.max_new_tokens,
        temperature=options.temperature,
        top_p=options.top_p,
        batch_size=options.batch_size,
        seed=options.seed,
        progress=progress,
    )
    return save_negatives(config.data.negatives, records)
