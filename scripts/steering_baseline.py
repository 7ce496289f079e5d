"""The training-free baseline of docs/objectives.md, measured on the demo suite: a refusal
direction and probe fitted on the pooled prompt states of the training prompts (harmful and
benign), then generation steered along it, always or only where the probe fires.

    python scripts/steering_baseline.py --out runs/steering [--layer 14] [--strengths 4 8]

Writes probe.json (the probe's AUROC and flag rates on every held-out set) and one
`fastunlearn eval`-style result per setting (steer-<strength>[-gated].json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fastunlearn.data import read_prompts
from fastunlearn.engine.steering import fit_refusal_direction, pooled_prompt_states, steered
from fastunlearn.eval import demo_data_path, demo_suite, evaluate
from fastunlearn.models import bf16_autocast, load_default_model


def auroc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """P(score of a positive > score of a negative), ties counting half."""
    greater = (positive[:, None] > negative[None, :]).float().mean()
    ties = (positive[:, None] == negative[None, :]).float().mean()
    return float(greater + 0.5 * ties)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--layer", type=int, default=14)
    parser.add_argument("--strengths", type=float, nargs="+", default=[4.0, 8.0])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_default_model()
    refusal = fit_refusal_direction(
        model,
        tokenizer,
        read_prompts(demo_data_path("harmful_train.jsonl")),
        read_prompts(demo_data_path("benign_train.jsonl")),
        args.layer,
    )
    suite = demo_suite(max_new_tokens=args.max_new_tokens, adversarial_templates={})
    sets = {
        "harmful": suite.harmful_prompts,
        "ood": suite.ood_prompts,
        "benign": suite.benign_prompts,
        "lookalike": suite.lookalike_prompts,
    }
    scores = {
        name: refusal.harmful_probability(
            pooled_prompt_states(model, tokenizer, prompts, args.layer)
        )
        for name, prompts in sets.items()
    }
    probe = {
        "layer": args.layer,
        "flagged": {name: float((s > 0.5).float().mean()) for name, s in scores.items()},
        "auroc": {
            f"{h} vs {b}": auroc(scores[h], scores[b])
            for h in ("harmful", "ood")
            for b in ("benign", "lookalike")
        },
    }
    (out / "probe.json").write_text(json.dumps(probe, indent=2) + "\n")
    print(json.dumps(probe, indent=2))
    for strength in args.strengths:
        for gated in (False, True):
            name = f"steer-{strength:g}{'-gated' if gated else ''}"
            with steered(model, refusal, strength, gated=gated), bf16_autocast(model):
                result = evaluate(model, tokenizer, suite)
            (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
            print(
                name,
                {k: result[k] for k in ("harmless_rate", "over_refusal_rate", "perplexity")},
                "ood",
                result["robustness"].get("ood"),
                "lookalike",
                result["lookalike_over_refusal_rate"],
            )


if __name__ == "__main__":
    main()
