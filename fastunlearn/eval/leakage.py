"""Copyright leakage (docs/evaluation.md): how much of a forgotten text a model still reproduces.

The text is cut into windows of window_length tokens (as `fastunlearn.data.token_blocks`
cuts a corpus: documents joined with EOS, no special tokens); the first prefix_length
tokens of a window are the prompt, the rest its true continuation. The model continues
every prefix greedily for as many tokens as the continuation holds, and each continuation
is scored two ways:

* ROUGE-L F-measure (the `rouge-score` package, with stemming) of the decoded texts;
* the longest verbatim match: the longest run of consecutive tokens that the generated and
  the true continuation share, in tokens (and as a share of the continuation length).

What a model must offer (the seam the tests use): ``generate(input_ids=, attention_mask=,
generation_config=)`` returning the input ids followed by the new ids, and ``parameters()``.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from rouge_score import rouge_scorer
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from fastunlearn.data import token_blocks
from fastunlearn.eval.metrics import perplexity
from fastunlearn.models import evaluation_mode


@dataclass
class LeakageResult:
    """Means over windows, and the per-window values they average."""

    rouge_l: float
    verbatim_tokens: float
    verbatim_share: float
    windows: int
    prefix_length: int
    continuation_length: int
    rouge_l_per_window: list[float]
    verbatim_tokens_per_window: list[int]
    generated: list[str]
    references: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def leakage_windows(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    window_length: int,
    prefix_length: int,
    *,
    stride: int | None = None,
    max_windows: int | None = None,
) -> list[tuple[list[int], list[int]]]:
    """(prefix ids, true continuation ids) windows of a corpus; windows start every stride
    tokens (default window_length: no overlap), at most max_windows of them, evenly spread
    over the text when there are more."""
    if not 0 < prefix_length < window_length:
        raise ValueError(
            f"prefix_length must lie in [1, window_length={window_length}) to leave a continuation "
            f"to predict, got {prefix_length}"
        )
    if max_windows is not None and max_windows < 1:
        raise ValueError(f"max_windows must be positive, got {max_windows}")
    blocks = [
        example.input_ids
        for example in token_blocks(tokenizer, texts, window_length, stride=stride)
    ]
    if len(blocks[0]) < window_length:
        raise ValueError(
            f"the text holds {len(blocks[0])} tokens, fewer than one window of {window_length} "
            f"(prefix {prefix_length} + continuation {window_length - prefix_length})"
        )
    if max_windows is not None and len(blocks) > max_windows:
        blocks = [blocks[i * len(blocks) // max_windows] for i in range(max_windows)]
    return [(list(block[:prefix_length]), list(block[prefix_length:])) for block in blocks]


def longest_verbatim_match(generated: Sequence[int], reference: Sequence[int]) -> int:
    """Length of the longest run of consecutive tokens common to both sequences."""
    # autojunk=False: difflib would otherwise ignore frequent tokens in sequences of 200+.
    matcher = difflib.SequenceMatcher(None, list(generated), list(reference), autojunk=False)
    return matcher.find_longest_match(0, len(generated), 0, len(reference)).size


def copyright_leakage(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    window_length: int = 64,
    prefix_length: int = 32,
    stride: int | None = None,
    max_windows: int | None = None,
    batch_size: int = 8,
) -> LeakageResult:
    """Greedy continuations of the windows' prefixes scored against the true continuations."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    windows = leakage_windows(
        tokenizer, texts, window_length, prefix_length, stride=stride, max_windows=max_windows
    )
    continuation_length = window_length - prefix_length
    # Exactly continuation_length new tokens (min = max): every window is scored on the same length.
    pad_id = (
        tokenizer.pad_token_id
        if tokenizer.pad_token_id is not None
        else (tokenizer.eos_token_id or 0)
    )
    config = GenerationConfig(
        max_new_tokens=continuation_length,
        min_new_tokens=continuation_length,
        do_sample=False,
        num_beams=1,
        pad_token_id=pad_id,
    )
    device = next(model.parameters()).device
    generated_ids: list[list[int]] = []
    with torch.no_grad(), evaluation_mode(model):
        for start in range(0, len(windows), batch_size):
            # Every prefix has the same length: the batch needs no padding.
            prefixes = torch.tensor(
                [prefix for prefix, _ in windows[start : start + batch_size]], device=device
            )
            output = model.generate(
                input_ids=prefixes,
                attention_mask=torch.ones_like(prefixes),
                generation_config=config,
            )
            generated_ids += output[:, prefix_length:].tolist()
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    generated = tokenizer.batch_decode(generated_ids, skip_special_tokens=True)
    references = tokenizer.batch_decode(
        [continuation for _, continuation in windows], skip_special_tokens=True
    )
    rouge = [
        scorer.score(reference, text)["rougeL"].fmeasure
        for reference, text in zip(references, generated, strict=True)
    ]
    verbatim = [
        longest_verbatim_match(ids, continuation)
        for ids, (_, continuation) in zip(generated_ids, windows, strict=True)
    ]
    return LeakageResult(
        rouge_l=sum(rouge) / len(rouge),
        verbatim_tokens=sum(verbatim) / len(verbatim),
        verbatim_share=sum(verbatim) / (len(verbatim) * continuation_length),
        windows=len(windows),
        prefix_length=prefix_length,
        continuation_length=continuation_length,
        rouge_l_per_window=rouge,
        verbatim_tokens_per_window=verbatim,
        generated=generated,
        references=references,
    )


def copyright_metrics(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    forget_texts: Sequence[str],
    heldout_texts: Sequence[str] | None = None,
    *,
    window_length: int = 64,
    prefix_length: int = 32,
    max_windows: int | None = None,
    batch_size: int = 8,
) -> dict[str, float]:
    """Leakage means plus perplexity on the forgotten text and (when given) on held-out
    normal text: unlearning should raise the first and leave the second."""
    leakage = copyright_leakage(
        model,
        tokenizer,
        forget_texts,
        window_length=window_length,
        prefix_length=prefix_length,
        max_windows=max_windows,
        batch_size=batch_size,
    )
    metrics = {
        "rouge_l": leakage.rouge_l,
        "verbatim_tokens": leakage.verbatim_tokens,
        "verbatim_share": leakage.verbatim_share,
        "perplexity_forget": perplexity(
            model, tokenizer, forget_texts, block_length=window_length, batch_size=batch_size
        ),
    }
    if heldout_texts is not None:
        metrics["perplexity_heldout"] = perplexity(
            model, tokenizer, heldout_texts, block_length=window_length, batch_size=batch_size
        )
    return metrics
