"""The run config's data section -> records and the batch sampler for its objective."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
from transformers import PreTrainedTokenizerBase

from fastunlearn.data.batches import (
    BatchSampler,
    ContrastiveSource,
    MismatchSource,
    SequenceSource,
    padding_id,
)
from fastunlearn.data.negatives import attach_negatives, read_answers, read_negatives
from fastunlearn.data.readers import (
    HarmfulPrompt,
    read_corpus,
    read_pairs,
    read_pku_saferlhf,
    read_prompts,
    read_refusals,
    read_truthfulqa,
)
from fastunlearn.data.tokenization import token_blocks, tokenize_pairs
from fastunlearn.engine.config import SourceConfig, UnlearnConfig
from fastunlearn.engine.overrides import ConfigError


@contextlib.contextmanager
def _naming(section: str) -> Iterator[None]:
    """Prefix a reader's error with the config key it came from (the error names the file)."""
    try:
        yield
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{section}: {error}") from error
    except ValueError as error:
        raise ValueError(f"{section}: {error}") from error


def _require_path(source: SourceConfig, section: str, why: str) -> str:
    if source.path is None:
        raise ConfigError(f"{section}.path is not set; {why}")
    return source.path


def forget_records(config: UnlearnConfig, *, with_negatives: bool = True) -> list[HarmfulPrompt]:
    """data.forget as harmful prompts (not for the corpus format), with the sampled
    negatives of data.negatives merged in when ``with_negatives``."""
    source = config.data.forget
    path = _require_path(source, "data.forget", "it names the data to unlearn")
    with _naming("data.forget"):
        if source.format == "pku_saferlhf":
            records = read_pku_saferlhf(path)
        elif source.format == "pairs":
            grouped: dict[str, list[str]] = {}
            for prompt, response in read_pairs(
                path, prompt_field=source.prompt_field, response_field=source.response_field
            ):
                grouped.setdefault(prompt, []).append(response)
            records = [
                HarmfulPrompt(prompt, tuple(dict.fromkeys(responses)), ())
                for prompt, responses in grouped.items()
            ]
        elif source.format == "prompts":
            records = [
                HarmfulPrompt(prompt, (), ())
                for prompt in read_prompts(path, field=source.prompt_field)
            ]
        else:
            raise ConfigError(
                "data.forget.format corpus holds texts, not prompts: it has no negatives to "
                "sample and no prompts for WPN or the mismatch term"
            )
    if with_negatives and config.data.negatives is not None:
        with _naming("data.negatives"):
            records = attach_negatives(
                records, read_negatives(config.data.negatives), config.data.negatives
            )
    return records


def _normal_pairs(source: SourceConfig, section: str) -> list[tuple[str, str]]:
    with _naming(section):
        if source.format == "truthfulqa":
            return read_truthfulqa(source.path)
        return read_pairs(
            source.path, prompt_field=source.prompt_field, response_field=source.response_field
        )


def build_sampler(
    config: UnlearnConfig, tokenizer: PreTrainedTokenizerBase, rank: int = 0, world_size: int = 1
) -> BatchSampler:
    """Read and tokenize every data source the objective uses; errors name the config key
    and the file."""
    data, objective = config.data, config.objective
    method = objective.method
    pad = padding_id(tokenizer)
    mismatch = None
    if method.data == "contrastive":
        refusals = ()
        if data.positives.path is not None:
            with _naming("data.positives"):
                refusals = read_refusals(data.positives.path, field=data.positives.field)
        records, unfinished = forget_records(config), ()
        if data.benign_anchors:
            anchors, unfinished = _benign_anchors(config, refusals)
            records += anchors
        with _naming("data.forget"):
            forget = ContrastiveSource(
                tokenizer,
                records,
                data.num_negatives,
                refusals=refusals,
                max_length=data.max_length,
                name=data.forget.path,
                unfinished=unfinished,
            )
    elif data.forget.format == "corpus":
        if method.mismatch_data:
            raise ConfigError(
                f"objective {objective.name} pairs forget prompts with normal answers, so "
                "data.forget needs prompts (pku_saferlhf, pairs), not a corpus"
            )
        path = _require_path(data.forget, "data.forget", "it names the text to unlearn")
        with _naming("data.forget"):
            blocks = token_blocks(
                tokenizer, read_corpus(path, field=data.forget.field), data.max_length
            )
        forget = SequenceSource(blocks, pad, "data.forget")
    else:
        pairs = [
            (record.prompt, response)
            for record in forget_records(config)
            for response in record.negatives
        ]
        if not pairs:
            raise ValueError(
                f"data.forget: {data.forget.path} holds no harmful response to unlearn; for "
                "prompts alone, sample responses with `fastunlearn generate` (data.negatives)"
            )
        with _naming("data.forget"):
            forget = SequenceSource(
                tokenize_pairs(
                    tokenizer, pairs, max_length=data.max_length, source=data.forget.path
                ),
                pad,
                "data.forget",
            )
        if method.mismatch_data:
            mismatch = MismatchSource(
                tokenizer,
                [prompt for prompt, _ in pairs],
                _mismatch_answers(config),
                data.max_length,
            )
    retain = _retain_source(config, tokenizer, pad) if objective.needs_retain else None
    return BatchSampler(
        forget,
        batch_size=data.batch_size,
        retain=retain,
        retain_batch_size=data.retain_batch_size,
        mismatch=mismatch,
        seed=config.train.seed,
        rank=rank,
        world_size=world_size,
    )


# Refusals each benign anchor contrasts its answer with (a fixed sample: every pair of a
# group is tokenized up front, so all refusals for every anchor would cost minutes).
REFUSALS_PER_ANCHOR = 8


def _benign_anchors(
    config: UnlearnConfig, refusals: list[str]
) -> tuple[list[HarmfulPrompt], list[tuple[str, str]]]:
    """WPN groups for the model's own answers to benign prompts (data.benign_anchors): the
    answer is the positive, refusals the negatives; and the (prompt, answer) pairs that
    generation cut short."""
    if not refusals:
        raise ConfigError("data.benign_anchors contrasts answers with refusals: set data.positives")
    with _naming("data.benign_answers"):
        answers = read_answers(config.data.benign_answers)
    rng = np.random.default_rng(config.train.seed)
    count = min(REFUSALS_PER_ANCHOR, len(refusals))
    anchors = [
        HarmfulPrompt(
            prompt,
            tuple(refusals[i] for i in rng.choice(len(refusals), count, replace=False)),
            (answer.text,),
        )
        for prompt, answer in answers
    ]
    return anchors, [(prompt, answer.text) for prompt, answer in answers if not answer.finished]


def _mismatch_answers(config: UnlearnConfig) -> list[str]:
    data = config.data
    if data.normal.path is not None:
        return [response for _, response in _normal_pairs(data.normal, "data.normal")]
    if data.retain.path is not None and data.retain.format != "corpus":
        return [response for _, response in _normal_pairs(data.retain, "data.retain")]
    raise ConfigError(
        f"objective {config.objective.name} needs normal answers for its mismatch term: set "
        "data.normal.path (or data.retain.path with format pairs or truthfulqa)"
    )


def _retain_source(
    config: UnlearnConfig, tokenizer: PreTrainedTokenizerBase, pad: int
) -> SequenceSource:
    data = config.data
    path = _require_path(
        data.retain,
        "data.retain",
        f"objective {config.objective.name!r} (retain={config.objective.retain!r}) "
        "trains on retain data",
    )
    if data.retain.format == "corpus":
        with _naming("data.retain"):
            examples = token_blocks(
                tokenizer, read_corpus(path, field=data.retain.field), data.max_length
            )
    else:
        pairs = _normal_pairs(data.retain, "data.retain")
        with _naming("data.retain"):
            examples = tokenize_pairs(tokenizer, pairs, max_length=data.max_length, source=path)
    return SequenceSource(examples, pad, "data.retain")
