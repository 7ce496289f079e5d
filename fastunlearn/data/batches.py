"""Records -> the objectives' batches, drawn by a seeded sampler that resumes exactly.

Sources turn chosen examples into one batch each:
  SequenceSource     tokenized examples (forget pairs, text blocks, retain data) -> SequenceBatch
  ContrastiveSource  harmful prompts with positives and negatives -> WPN ContrastiveBatch
  MismatchSource     forget prompts with random normal answers -> SequenceBatch
BatchSampler draws PairedBatches from them. Micro-batch i is a pure function of (seed, i),
so the sampler's whole state is the index of the next micro-batch: a checkpoint stores one
integer, and the ranks of a DeepSpeed job share one stream, rank r taking micro-batches
r, r + W, r + 2W, ... A single process accumulating W times as many micro-batches per step
sees exactly the data of a W-rank job.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterator, Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from fastunlearn.data.collate import pad_examples
from fastunlearn.data.readers import HarmfulPrompt
from fastunlearn.data.tokenization import TokenizedExample, tokenize_pair
from fastunlearn.objectives import ContrastiveBatch, PairedBatch, SequenceBatch

# Keys that keep the permutation streams of the pools apart under one seed.
FORGET_STREAM, RETAIN_STREAM, SAMPLING_STREAM = 0, 1, 2


def padding_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The pad token, else EOS (GPT-2 has no pad token; padding is masked out anyway)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token to pad batches with")
    return pad


class PairTokenizer:
    """tokenize_pair truncated to max_length, memoised (a pair drawn again in a later epoch
    is not tokenized again). ValueError, naming ``source``, for a prompt that leaves no
    room for a response token."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int | None):
        self.tokenizer, self.max_length = tokenizer, max_length
        self._cache: dict[tuple[str, str, bool], TokenizedExample] = {}

    def __call__(
        self, prompt: str, response: str, source: str = "pair", *, finished: bool = True
    ) -> TokenizedExample:
        key = (prompt, response, finished)
        if key not in self._cache:
            try:
                example = tokenize_pair(self.tokenizer, prompt, response, finished=finished)
            except ValueError as error:
                raise ValueError(f"{source}: {error}") from error
            if self.max_length is not None and len(example) > self.max_length:
                # The prompt span starts at token 0, so truncation can only empty the response.
                example = example.truncated(self.max_length)
                if not any(example.response_mask):
                    raise ValueError(
                        f"{source}: the prompt {prompt[:60]!r} fills max_length={self.max_length} "
                        "tokens, leaving no response token; shorten it or raise max_length"
                    )
            self._cache[key] = example
        return self._cache[key]


class SequenceSource:
    """Tokenized examples; a batch is the chosen ones, right-padded."""

    def __init__(
        self, examples: Sequence[TokenizedExample], pad_token_id: int, name: str = "examples"
    ):
        if not examples:
            raise ValueError(f"{name}: no examples")
        self.examples, self.pad_token_id = list(examples), pad_token_id

    def __len__(self) -> int:
        return len(self.examples)

    def batch(self, indices: Sequence[int], rng: np.random.Generator) -> SequenceBatch:
        return SequenceBatch(
            **pad_examples([self.examples[i] for i in indices], self.pad_token_id, "right")
        )


class ContrastiveSource:
    """WPN groups: each harmful prompt with one positive and ``num_negatives`` negatives.

    The positive is drawn from the record's own positives, else from ``refusals``; the
    negatives are drawn without repetition from the record's. A prompt with fewer than
    ``num_negatives`` keeps them all and fills its group with repeats that the batch's
    candidate_mask leaves out of the loss. Every record's pairs are tokenized here, so an
    over-long prompt fails before training starts. ``unfinished`` (prompt, response) pairs
    were cut short by generation and are tokenized without an end-of-turn marker.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        records: Sequence[HarmfulPrompt],
        num_negatives: int,
        *,
        refusals: Sequence[str] = (),
        max_length: int | None = None,
        name: str = "forget",
        unfinished: Collection[tuple[str, str]] = (),
    ):
        if not records:
            raise ValueError(f"{name}: no harmful prompts")
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be at least 1, got {num_negatives}")
        without_negatives = [index for index, record in enumerate(records) if not record.negatives]
        if without_negatives:
            raise ValueError(
                f"{name}: {len(without_negatives)} of {len(records)} prompts have no negative "
                f"response (first: prompt {without_negatives[0]}, "
                f"{records[without_negatives[0]].prompt!r}); give data.negatives (sampled with "
                "`fastunlearn generate`) or data with harmful responses"
            )
        without_positives = [index for index, record in enumerate(records) if not record.positives]
        if without_positives and not refusals:
            raise ValueError(
                f"{name}: {len(without_positives)} prompts have no harmless response (first: "
                f"prompt {without_positives[0]}); give a refusal list (data.positives) to draw "
                "positives from"
            )
        self.records, self.num_negatives, self.refusals = (
            list(records),
            num_negatives,
            list(refusals),
        )
        self.pad_token_id = padding_id(tokenizer)
        self.unfinished = frozenset(unfinished)
        self.tokenizer = PairTokenizer(tokenizer, max_length)
        for index, record in enumerate(self.records):
            for response in (*record.positives, *record.negatives):
                self.tokenize(record.prompt, response, f"{name} prompt {index}")

    def __len__(self) -> int:
        return len(self.records)

    def tokenize(self, prompt: str, response: str, source: str = "pair") -> TokenizedExample:
        finished = (prompt, response) not in self.unfinished
        return self.tokenizer(prompt, response, source, finished=finished)

    def batch(self, indices: Sequence[int], rng: np.random.Generator) -> ContrastiveBatch:
        examples, candidate_mask = [], []
        for index in indices:
            record = self.records[index]
            positives = record.positives or self.refusals
            positive = positives[rng.integers(len(positives))]
            count = min(self.num_negatives, len(record.negatives))
            chosen = [
                record.negatives[j] for j in rng.choice(len(record.negatives), count, replace=False)
            ]
            fill = self.num_negatives - count
            responses = [positive, *chosen, *chosen[:1] * fill]
            examples += [self.tokenize(record.prompt, response) for response in responses]
            candidate_mask.append([True] * (1 + count) + [False] * fill)
        padded = pad_examples(examples, self.pad_token_id, "right")
        # No mask when every group is full: the loss then takes its unmasked path.
        mask = None if all(all(row) for row in candidate_mask) else torch.tensor(candidate_mask)
        return ContrastiveBatch(
            **padded, num_candidates=1 + self.num_negatives, candidate_mask=mask
        )


class MismatchSource:
    """Yao et al.'s random mismatch: forget prompt i with an answer drawn from normal data.

    ``prompts[i]`` is the prompt of forget example i, so the rows line up with the forget
    batch drawn with the same indices.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompts: Sequence[str],
        answers: Sequence[str],
        max_length: int | None = None,
    ):
        if not answers:
            raise ValueError("mismatch: no normal answers to pair the forget prompts with")
        self.prompts, self.answers = list(prompts), list(answers)
        self.pad_token_id = padding_id(tokenizer)
        self.tokenize = PairTokenizer(tokenizer, max_length)

    def __len__(self) -> int:
        return len(self.prompts)

    def batch(self, indices: Sequence[int], rng: np.random.Generator) -> SequenceBatch:
        answers = rng.integers(len(self.answers), size=len(indices))
        examples = [
            self.tokenize(self.prompts[i], self.answers[a], "mismatch")
            for i, a in zip(indices, answers, strict=True)
        ]
        return SequenceBatch(**pad_examples(examples, self.pad_token_id, "right"))


class BatchSampler:
    """An endless, seeded stream of PairedBatches (forget, and optionally retain and mismatch).

    Each pool is read in a fresh seeded permutation every epoch (batches run on across the
    epoch boundary); the other random choices of micro-batch i (positives, negatives,
    mismatch answers) come from a generator seeded with (seed, i). ``state_dict()`` is
    {"next_batch": i}: the next micro-batch of the whole job, all ranks together.
    """

    def __init__(
        self,
        forget: SequenceSource | ContrastiveSource,
        *,
        batch_size: int,
        retain: SequenceSource | None = None,
        retain_batch_size: int | None = None,
        mismatch: MismatchSource | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if mismatch is not None and len(mismatch) != len(forget):
            raise ValueError(
                f"mismatch needs one prompt per forget example: {len(mismatch)} vs {len(forget)}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
        self.forget, self.retain, self.mismatch = forget, retain, mismatch
        self.batch_size, self.retain_batch_size = batch_size, retain_batch_size or batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.next_batch = 0

    def batch(self, index: int) -> PairedBatch:
        """Micro-batch ``index`` of the stream (any rank gets the same one)."""
        rng = np.random.default_rng([self.seed, SAMPLING_STREAM, index])
        forget_indices = self._draw(
            FORGET_STREAM, len(self.forget), index * self.batch_size, self.batch_size
        )
        retain = None
        if self.retain is not None:
            start = index * self.retain_batch_size
            retain = self.retain.batch(
                self._draw(RETAIN_STREAM, len(self.retain), start, self.retain_batch_size), rng
            )
        return PairedBatch(
            forget=self.forget.batch(forget_indices, rng),
            retain=retain,
            mismatch=None if self.mismatch is None else self.mismatch.batch(forget_indices, rng),
        )

    def __iter__(self) -> Iterator[PairedBatch]:
        return self

    def __next__(self) -> PairedBatch:
        batch = self.batch(self.next_batch + self.rank)
        self.next_batch += self.world_size
        return batch

    def state_dict(self) -> dict:
        return {"next_batch": self.next_batch}

    def load_state_dict(self, state: dict) -> None:
        self.next_batch = int(state["next_batch"])

    def _draw(self, stream: int, pool_size: int, start: int, count: int) -> list[int]:
        """Positions start .. start+count-1 of the pool's endless sequence of epochs."""
        return [
            int(self._permutation(stream, pool_size, position // pool_size)[position % pool_size])
            for position in range(start, start + count)
        ]

    @functools.lru_cache(maxsize=8)  # noqa: B019 - a few epochs' permutations per sampler
    def _permutation(self, stream: int, pool_size: int, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, stream, epoch]).permutation(pool_size)
