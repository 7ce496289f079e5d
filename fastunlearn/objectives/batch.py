"""Batches the objectives read: tokenized ``[prompt ; response]`` sequences with span masks.

The data layer produces these; every batch checks itself when built and raises ValueError
naming the offending example, so that a bad example fails at load time, not as a NaN later.

Conventions shared by every batch (tensors [B, T], one row per sequence):

* ``input_ids`` (integer): prompt tokens, then response tokens, then padding.
* ``attention_mask`` (0/1 or bool): 1 on real tokens. Sequences are right-padded (real
  tokens first): then position ids are those of the unpadded sequence in every
  architecture, and the prompt of a WPN group sits at the same positions in all its rows.
* ``prompt_mask`` / ``response_mask`` (bool): the prompt and the response spans, disjoint,
  inside the real tokens, the response after the prompt. The response is never empty (it
  needs a token after position 0: token t is predicted from the ones before). The prompt
  may be empty in a SequenceBatch (text blocks of a corpus to forget or retain are all
  response), never in a ContrastiveBatch (its prompt is the WPN anchor). Chat-template
  tokens around the prompt or the response may be in either span or in neither, as the
  data layer decides.

Moving a batch with ``.to(device)`` does not check it again: its content is unchanged, and
checks on an accelerator would stall it.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def _moved(batch, device: torch.device | str):
    """A shallow copy of ``batch`` with every tensor field (and sub-batch) on ``device``."""
    moved = copy.copy(batch)
    for field in dataclasses.fields(batch):
        value = getattr(batch, field.name)
        if hasattr(value, "to"):  # tensors and sub-batches
            setattr(moved, field.name, value.to(device))
    return moved


def _check_sequences(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_mask: torch.Tensor,
    response_mask: torch.Tensor,
    describe_row: Callable[[int], str],
    require_prompt: bool,
) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise ValueError(
            f"input_ids must be a [B, T] tensor, got {getattr(input_ids, 'shape', type(input_ids))}"
        )
    if input_ids.dtype not in INTEGER_DTYPES:
        raise ValueError(f"input_ids must hold integer token ids, got {input_ids.dtype}")
    if input_ids.shape[0] == 0 or input_ids.shape[1] < 2:
        raise ValueError(
            "input_ids needs at least one sequence of at least 2 tokens, "
            f"got shape {tuple(input_ids.shape)}"
        )
    for name, mask in (
        ("attention_mask", attention_mask),
        ("prompt_mask", prompt_mask),
        ("response_mask", response_mask),
    ):
        if not isinstance(mask, torch.Tensor) or mask.shape != input_ids.shape:
            shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(
                f"{name} must have the shape of input_ids {tuple(input_ids.shape)}, got {shape}"
            )
        if mask.device != input_ids.device:
            raise ValueError(f"{name} is on {mask.device} but input_ids on {input_ids.device}")
    for name, mask in (("prompt_mask", prompt_mask), ("response_mask", response_mask)):
        if mask.dtype != torch.bool:
            raise ValueError(f"{name} must be a bool tensor, got {mask.dtype}")
    real = attention_mask.bool()
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    last_prompt_position = positions.masked_fill(~prompt_mask, -1).amax(dim=1)
    after_last = input_ids.shape[1]
    first_response_position = positions.masked_fill(~response_mask, after_last).amin(dim=1)

    def first_bad_row(bad_rows: torch.Tensor) -> int | None:
        rows = bad_rows.nonzero()
        return int(rows[0]) if len(rows) else None

    checks = (
        (~prompt_mask.any(dim=1) & require_prompt, "has an empty prompt span"),
        (
            ~response_mask[:, 1:].any(dim=1),
            "has an empty response span (no response token after position 0)",
        ),
        (
            (prompt_mask & response_mask).any(dim=1),
            "has tokens in both the prompt and the response span",
        ),
        (
            ((prompt_mask | response_mask) & ~real).any(dim=1),
            "has prompt or response tokens outside attention_mask",
        ),
        # Response after prompt, so every response token has a prediction (from the one before).
        (
            last_prompt_position >= first_response_position,
            "has response tokens before the end of its prompt span",
        ),
        # Right padding: once a row's attention_mask drops to 0 it never comes back to 1.
        (
            (real[:, 1:] & ~real[:, :-1]).any(dim=1),
            "is not right-padded (attention_mask must be 1...1 0...0)",
        ),
    )
    for bad_rows, problem in checks:
        row = first_bad_row(bad_rows)
        if row is not None:
            raise ValueError(f"{describe_row(row)} {problem}")


@dataclass
class SequenceBatch:
    """B sequences ``[prompt ; response]`` (see the module docstring for the conventions).

    Used for harmful (forget) pairs, for harmful prompts with mismatched normal answers, for
    normal (retain) data, and for text blocks (empty prompt) of a corpus.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_mask: torch.Tensor
    response_mask: torch.Tensor

    def __post_init__(self) -> None:
        _check_sequences(
            self.input_ids,
            self.attention_mask,
            self.prompt_mask,
            self.response_mask,
            lambda row: f"example {row}",
            require_prompt=False,
        )

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> SequenceBatch:
        return _moved(self, device)


@dataclass
class ContrastiveBatch:
    """WPN input: P prompts, each with 1 positive (harmless) and N negative (harmful) responses.

    The P * (1 + N) sequences ``[prompt_p ; response]`` are laid out prompt by prompt, each
    group of ``num_candidates = 1 + N`` rows starting with the positive:
    row ``p * (1 + N) + 0`` is ``[prompt_p ; positive_p]``, row ``p * (1 + N) + j`` is
    ``[prompt_p ; negative_p_j]``. All rows of a group hold the same prompt at the same
    positions.

    ``candidate_mask[P, 1 + N]`` (bool, optional) lets prompts have fewer negatives: False
    leaves a row out of the loss. Such a row must still hold a valid sequence (repeating one
    of the group's other rows is simplest). Column 0 (the positive) must be True and every
    prompt needs at least one negative.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_mask: torch.Tensor
    response_mask: torch.Tensor
    num_candidates: int
    candidate_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        k = self.num_candidates
        if not isinstance(k, int) or k < 2:
            raise ValueError(
                "a ContrastiveBatch needs at least one negative per prompt: num_candidates "
                f"= 1 + N must be >= 2, got {k!r}"
            )
        rows = self.input_ids.shape[0] if isinstance(self.input_ids, torch.Tensor) else None
        if rows is None or rows % k != 0:
            raise ValueError(
                f"input_ids must have P * num_candidates = P * {k} rows (one group per prompt), "
                f"got {rows} rows"
            )

        def describe_row(row: int) -> str:
            role = "the positive" if row % k == 0 else f"negative {row % k}"
            return f"sequence {row} (prompt {row // k}, {role})"

        _check_sequences(
            self.input_ids,
            self.attention_mask,
            self.prompt_mask,
            self.response_mask,
            describe_row,
            require_prompt=True,
        )
        self._check_shared_prompts()
        if self.candidate_mask is not None:
            self._check_candidate_mask()

    def _check_shared_prompts(self) -> None:
        prompts = self.input_ids.masked_fill(~self.prompt_mask, -1).view(
            self.num_prompts, self.num_candidates, -1
        )
        differs = (prompts != prompts[:, :1]).any(dim=2).nonzero()
        if len(differs):
            prompt, candidate = (int(i) for i in differs[0])
            first = prompt * self.num_candidates
            raise ValueError(
                f"sequence {first + candidate} (prompt {prompt}) does not hold the same prompt at "
                f"the same positions as its group's positive (sequence {first})"
            )

    def _check_candidate_mask(self) -> None:
        mask = self.candidate_mask
        expected = (self.num_prompts, self.num_candidates)
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != expected:
            shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"candidate_mask must have shape [P, 1 + N] = {expected}, got {shape}")
        if mask.dtype != torch.bool:
            raise ValueError(f"candidate_mask must be a bool tensor, got {mask.dtype}")
        if mask.device != self.input_ids.device:
            raise ValueError(
                f"candidate_mask is on {mask.device} but input_ids on {self.input_ids.device}"
            )
        for bad_rows, problem in (
            (~mask[:, 0], "leaves out its positive (column 0)"),
            (~mask[:, 1:].any(dim=1), "has 0 negatives in candidate_mask"),
        ):
            rows = bad_rows.nonzero()
            if len(rows):
                raise ValueError(f"prompt {int(rows[0])} {problem}")

    @property
    def num_prompts(self) -> int:
        return self.input_ids.shape[0] // self.num_candidates

    def to(self, device: torch.device | str) -> ContrastiveBatch:
        return _moved(self, device)


@dataclass
class PairedBatch:
    """The data one step of a composed objective reads, one field per kind of data.

    * ``forget``: what to unlearn (harmful pairs, or a ContrastiveBatch for WPN).
    * ``retain``: normal data whose behaviour should stay (TruthfulQA, BookCorpus), for the
      retain NLL and KL terms.
    * ``mismatch``: harmful prompts paired with random normal answers (Yao et al.): row i
      holds forget prompt i with an answer drawn from the normal data.
    """

    forget: SequenceBatch | ContrastiveBatch
    retain: SequenceBatch | None = None
    mismatch: SequenceBatch | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.forget, (SequenceBatch, ContrastiveBatch)):
            raise TypeError(
                "forget must be a SequenceBatch or ContrastiveBatch, "
                f"got {type(self.forget).__name__}"
            )
        for name in ("retain", "mismatch"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, SequenceBatch):
                raise TypeError(
                    f"{name} must be a SequenceBatch or None, got {type(value).__name__}"
                )
        if self.mismatch is not None:
            if not isinstance(self.forget, SequenceBatch):
                raise ValueError(
                    "mismatch pairs the prompts of forget pairs with normal answers, so forget "
                    "must then be a SequenceBatch"
                )
            if len(self.mismatch) != len(self.forget):
                raise ValueError(
                    "mismatch pairs each forget prompt with one normal answer, so it needs as many "
                    f"sequences as forget: got {len(self.mismatch)} mismatch and "
                    f"{len(self.forget)} forget sequences"
                )

    def to(self, device: torch.device | str) -> PairedBatch:
        return _moved(self, device)
