"""Robustness to relearning (README, Results): fine-tune an unlearned model on a few harmful
prompt/answer pairs and measure how much of its harmlessness is left.

    python scripts/relearn.py --model runs/demo/final --pairs runs/demo/negatives.jsonl \\
        --out runs/relearn [--steps 10 50] [--examples 16]

The pairs are the first ``--examples`` prompts of a negatives file (the untouched model's own
sampled answers to harmful training prompts), one answer each. Training is plain supervised
fine-tuning of every weight (AdamW, learning rate 3e-5 by default, batch 4) through a stock
transformers.Trainer with the fused loss of `apply_fastunlearn`; after each step count the
model is evaluated on the whole held-out suite (greedy, 32 tokens, bf16 autocast) and the
result written to OUT/relearn-<steps>.json, as `fastunlearn eval --output` writes it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from datasets import Dataset
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

from fastunlearn import apply_fastunlearn
from fastunlearn.data import tokenize_pairs
from fastunlearn.data.negatives import read_negatives
from fastunlearn.eval import demo_suite, evaluate
from fastunlearn.models import bf16_autocast, load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the unlearned model folder")
    parser.add_argument("--pairs", required=True, help="a negatives file (fastunlearn generate)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=3e-5)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    negatives = list(read_negatives(args.pairs).items())[: args.examples]
    suite = demo_suite(max_new_tokens=32, adversarial_templates={})
    for steps in args.steps:
        model, tokenizer = load_model(args.model)
        examples = tokenize_pairs(
            tokenizer, [(prompt, answers[0]) for prompt, answers in negatives], max_length=96
        )
        rows = Dataset.from_dict(
            {
                "input_ids": [e.input_ids for e in examples],
                "labels": [
                    [t if r else -100 for t, r in zip(e.input_ids, e.response_mask, strict=True)]
                    for e in examples
                ],
            }
        )
        apply_fastunlearn(model)
        trainer = Trainer(
            model=model,
            args=TrainingArguments(
                out / f"trainer-{steps}",
                max_steps=steps,
                per_device_train_batch_size=4,
                learning_rate=args.learning_rate,
                lr_scheduler_type="constant",
                logging_steps=5,
                save_strategy="no",
                report_to=[],
                seed=0,
            ),
            train_dataset=rows,
            data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
        )
        trainer.train()
        with bf16_autocast(model):
            result = evaluate(model, tokenizer, suite)
        (out / f"relearn-{steps}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(
            f"{steps} steps: harmless {result['harmless_rate']:.3f}, held-out forms "
            f"{result['robustness']['ood']:.3f}, over-refusal {result['over_refusal_rate']:.3f}"
        )


if __name__ == "__main__":
    main()
