"""WPN vs GA vs GA+mismatch+KL on the demo setup (README "Results"): the same data, negatives,
LoRA settings and step budget, one load of the model, one "before" evaluation.

    python scripts/compare_methods.py [--steps 20] [--out runs/compare] [--methods WPN GA ...] [--set key=value ...]

Each method's evaluation is written to OUT/<method>.json, the untouched model's to
OUT/before.json (evaluated once, then reused), so methods can also run as parallel processes.

GA and GA+mismatch+KL unlearn the model's own sampled harmful answers (the WPN negatives);
the mismatch term's normal answers and the KL term's normal data are the demo's retain
pairs (benign prompts with answers). "WPN (N-pair only)" drops WPN's likelihood term on
the refusals, to show what that term adds.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path

from fastunlearn.demo import DEMO_CONFIG, demo_eval_suite
from fastunlearn.engine import UnlearnConfig, Unlearner
from fastunlearn.engine.generation import generate_configured_negatives
from fastunlearn.engine.unlearner import load_configured_model
from fastunlearn.eval import evaluate

METHODS = {
    "WPN": ["objective.name=wpn"],
    "WPN (N-pair only)": ["objective.name=wpn", "objective.positive_nll_weight=0"],
    "GA": ["objective.name=ga", "objective.retain=null"],
    "GA+mismatch+KL": ["objective.name=ga_mismatch_kl", "objective.retain=null"],
}

log = logging.getLogger("compare")


def run_folder(out: Path, method: str) -> Path:
    """OUT/<method> (spaces as underscores); its evaluation is the same path + ".json"."""
    return out / method.replace(" ", "_")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--set", dest="overrides", nargs="+", default=[])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    out = Path(args.out)
    common = [f"data.negatives={out / 'negatives.jsonl'}", f"train.max_steps={args.steps}", *args.overrides]
    base_config = UnlearnConfig.load(DEMO_CONFIG, common)
    model, tokenizer = load_configured_model(base_config)
    suite = demo_eval_suite()
    before_path = run_folder(out, "before").with_suffix(".json")
    if not before_path.is_file():
        before_path.write_text(json.dumps(evaluate(model, tokenizer, suite)))
    if not Path(base_config.data.negatives).is_file():
        generate_configured_negatives(base_config, model, tokenizer)
    for name in args.methods:
        folder = run_folder(out, name)
        config = UnlearnConfig.load(DEMO_CONFIG, [*common, *METHODS[name], f"train.output_dir={folder}"])
        started = time.perf_counter()
        # A fresh copy each time: LoRA is injected into the model it is given.
        unlearner = Unlearner(config, copy.deepcopy(model), tokenizer)
        unlearner.train()
        train_s = time.perf_counter() - started
        result = evaluate(unlearner.model, tokenizer, suite) | {"train_s": train_s}
        folder.with_suffix(".json").write_text(json.dumps(result))
        log.info("%s: harmless %.3f over-refusal %.3f perplexity %.3f (train %.0f s)", name,
                 result["harmless_rate"], result["over_refusal_rate"], result["perplexity"], train_s)
    results = {name: json.loads(path.read_text()) for name in ["before", *METHODS]
               if (path := run_folder(out, name).with_suffix(".json")).is_file()}
    print(table(results))


def table(results: dict) -> str:
    before = results["before"]
    lines = ["| model | harmless rate (held-out) | harmless rate (OOD) | over-refusal | perplexity (change) | train time |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, result in results.items():
        change = result["perplexity"] / before["perplexity"] - 1
        train = f"{result['train_s']:.0f} s" if "train_s" in result else "-"
        lines.append(f"| {'untouched' if name == 'before' else name} | {result['harmless_rate']:.1%} | "
                     f"{result['robustness'].get('ood', float('nan')):.1%} | {result['over_refusal_rate']:.1%} | "
                     f"{result['perplexity']:.2f} ({change:+.1%}) | {train} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
