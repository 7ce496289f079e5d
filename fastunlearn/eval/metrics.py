"""Metrics (docs/evaluation.md): harmless rate, over-refusal, response-class shares, perplexity,
lm-evaluation-harness.

The rates take responses already generated (`generation.generate_responses`), so one
generation pass can be judged several ways.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fastunlearn.data import TokenizedExample, pad_examples
from fastunlearn.eval.judges import RESPONSE_CLASSES, Judge, RuleJudge
from fastunlearn.models import evaluation_mode

# The nine benchmarks of the WPN paper, by their lm-evaluation-harness task names.
LM_EVAL_TASKS: tuple[str, ...] = (
    "arc_easy",
    "arc_challenge",
    "hellaswag",
    "piqa",
    "winogrande",
    "boolq",
    "openbookqa",
    "rte",
    "copa",
)
LM_EVAL_MISSING = (
    "lm-evaluation-harness benchmarks skipped: the 'lm_eval' package is not installed "
    "(pip install lm-eval to run {tasks})"
)


def share(flags: Sequence[bool]) -> float:
    """Fraction of True."""
    if not flags:
        raise ValueError("no responses to judge")
    return sum(flags) / len(flags)


def harmless_rate(prompts: Sequence[str], responses: Sequence[str], judge: Judge) -> float:
    """Share of responses the judge calls harmless (to be reported with judge.name)."""
    return share(judge.judge(prompts, responses))


def over_refusal_rate(
    prompts: Sequence[str], responses: Sequence[str], judge: RuleJudge | None = None
) -> float:
    """Share of responses to benign prompts that are not answers: refused, deflected or
    degenerate (the rules read each prompt too, as `evaluate` does)."""
    judge = judge or RuleJudge()
    return share([kind != "compliance" for kind in judge.classify(prompts, responses)])


def class_shares(classes: Sequence[str]) -> dict[str, float]:
    """The share of each of RESPONSE_CLASSES (all four keys, zeros included)."""
    if not classes:
        raise ValueError("no responses to judge")
    unknown = set(classes) - set(RESPONSE_CLASSES)
    if unknown:
        raise ValueError(f"unknown response classes {sorted(unknown)}; expected {RESPONSE_CLASSES}")
    return {kind: classes.count(kind) / len(classes) for kind in RESPONSE_CLASSES}


def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    block_length: int = 256,
    batch_size: int = 8,
) -> float:
    """exp of the mean next-token NLL over every predicted token of texts.

    The texts are tokenized without special tokens and joined with EOS (when the tokenizer
    has one), as `fastunlearn.data.token_blocks` joins a corpus, then cut into consecutive
    blocks of block_length tokens, the last one shorter: every token is scored once, the
    first of each block (no context) excepted. Blocks are right-padded into batches. The
    model's own loss gives each batch's mean NLL over its real predicted tokens; batches are
    weighted by that count, so the result is the per-token mean whatever the batching.
    """
    if block_length < 2:
        raise ValueError(
            f"block_length must be at least 2 (one token to predict), got {block_length}"
        )
    corpus_ids: list[int] = []
    # verbose=False: a long document is expected here, not a sign of a mistake.
    for document_ids in tokenizer(list(texts), add_special_tokens=False, verbose=False)[
        "input_ids"
    ]:
        if corpus_ids and tokenizer.eos_token_id is not None:
            corpus_ids.append(tokenizer.eos_token_id)
        corpus_ids.extend(document_ids)
    blocks = [
        _text_block(corpus_ids[start : start + block_length])
        for start in range(0, len(corpus_ids), block_length)
    ]
    # Any id works: padded positions are masked out of attention and loss.
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    total_nll, total_tokens = 0.0, 0
    with torch.no_grad(), evaluation_mode(model):
        for start in range(0, len(blocks), batch_size):
            batch = pad_examples(blocks[start : start + batch_size], pad_id)
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            # The loss shifts labels by one: the tokens it counts are those after position 0.
            predicted = int((labels[:, 1:] != -100).sum())
            if predicted == 0:  # a last block of a single token
                continue
            loss = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                labels=labels.to(device),
            ).loss
            total_nll += float(loss) * predicted
            total_tokens += predicted
    if total_tokens == 0:
        raise ValueError("the texts hold fewer than two tokens: nothing to predict")
    return math.exp(total_nll / total_tokens)


def _text_block(input_ids: list[int]) -> TokenizedExample:
    return TokenizedExample.from_spans(input_ids, (0, 0), (0, len(input_ids)))


def lm_eval_available() -> bool:
    return importlib.util.find_spec("lm_eval") is not None


def lm_eval_benchmarks(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[str] = LM_EVAL_TASKS,
    *,
    batch_size: int = 8,
    limit: int | None = None,
) -> dict:
    """Zero-shot accuracy per task through lm-evaluation-harness, or {"skipped": reason}
    when lm_eval is not installed. A task's entry holds "acc" and, where the task defines
    it, "acc_norm". limit caps the examples per task (for quick checks only)."""
    if not lm_eval_available():
        return {"skipped": LM_EVAL_MISSING.format(tasks=", ".join(tasks))}
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    with evaluation_mode(model):
        results = lm_eval.simple_evaluate(
            model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size),
            tasks=list(tasks),
            num_fewshot=0,
            limit=limit,
        )["results"]
    return {
        task: {
            metric: results[task][f"{metric},none"]
            for metric in ("acc", "acc_norm")
            if f"{metric},none" in results[task]
        }
        for task in tasks
    }


def per_class_agreement(labels: Sequence[str], predictions: Sequence[str]) -> dict:
    """How well predictions match labels: accuracy, and per class its precision (of the
    responses predicted as the class, the share labelled so), recall (of those labelled as
    the class, the share predicted so) and support (how many are labelled so). A precision
    with nothing predicted, or a recall with nothing labelled, is None."""
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    if not labels:
        raise ValueError("no labelled responses")
    pairs = list(zip(labels, predictions, strict=True))
    classes = {}
    for kind in dict.fromkeys([*labels, *predictions]):
        hits = sum(label == prediction == kind for label, prediction in pairs)
        predicted, labelled = predictions.count(kind), labels.count(kind)
        classes[kind] = {
            "precision": hits / predicted if predicted else None,
            "recall": hits / labelled if labelled else None,
            "support": labelled,
        }
    return {
        "accuracy": sum(label == prediction for label, prediction in pairs) / len(pairs),
        "classes": classes,
    }
