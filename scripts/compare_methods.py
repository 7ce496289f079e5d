"""The ablation of the README ("Does the N-pair term earn its place?"): every method on the
demo setup with the same data, negatives, LoRA settings and step budget, one load of the
model, one "before" evaluation, judged by the four response classes.

    python scripts/compare_methods.py [--steps 40] [--out runs/compare] [--methods NAME ...]
                                      [--set key=value ...] [--variant NAME KEY=VALUE ...]

Each method's evaluation is written to OUT/<method>.json, the untouched model's to
OUT/before.json (evaluated once, then reused), so methods can also run as separate
processes; the table is printed from whatever OUT holds (classified again by the current
rules), and OUT/tradeoff.png plots harmless
rate against over-refusal for every method. --variant adds a named set of overrides on top
of the demo config (a recipe sweep point) to the methods run.

GA, GA+mismatch+KL and NPO unlearn the model's own sampled harmful answers (the WPN
negatives); the mismatch term's normal answers and the KL term's data are the demo's retain
pairs (benign prompts with our answers).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path

from fastunlearn.engine import UnlearnConfig, Unlearner
from fastunlearn.engine.generation import generate_configured_negatives
from fastunlearn.engine.unlearner import load_configured_model
from fastunlearn.eval import evaluate, rejudge
from fastunlearn.recipes.demo import DEMO_CONFIG, demo_eval_suite

METHODS = {
    "WPN + refusal NLL": ["objective.name=wpn"],
    "WPN (N-pair only)": ["objective.name=wpn", "objective.positive_nll_weight=0"],
    "refusal NLL only": ["objective.name=wpn", "objective.npair_weight=0"],
    "GA": ["objective.name=ga", "objective.retain=null"],
    "GA+mismatch+KL": ["objective.name=ga_mismatch_kl", "objective.retain=null"],
    "NPO": ["objective.name=npo"],
}

log = logging.getLogger("compare")


def run_folder(out: Path, method: str) -> Path:
    """OUT/<method> (spaces as underscores); its evaluation is the same path + ".json"."""
    return out / method.replace(" ", "_").replace("/", "_")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--steps", type=int, default=None, help="optimizer steps (default: the demo config's)"
    )
    parser.add_argument("--out", default="runs/compare")
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--set", dest="overrides", nargs="+", default=[])
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        default=[],
        metavar="NAME KEY=VALUE",
        help="a named extra run: the demo config with these overrides",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = {name: METHODS[name] for name in args.methods} | {
        name: overrides for name, *overrides in args.variant
    }
    common = [f"data.negatives={out / 'negatives.jsonl'}", *args.overrides]
    if args.steps is not None:
        common.append(f"train.max_steps={args.steps}")
    base_config = UnlearnConfig.load(DEMO_CONFIG, common)
    model, tokenizer = load_configured_model(base_config)
    suite = demo_eval_suite(base_config.evaluation)
    before_path = run_folder(out, "before").with_suffix(".json")
    if not before_path.is_file():
        before_path.write_text(json.dumps(evaluate(model, tokenizer, suite)))
    if not Path(base_config.data.negatives).is_file():
        generate_configured_negatives(base_config, model, tokenizer)
    for name, overrides in runs.items():
        folder = run_folder(out, name)
        config = UnlearnConfig.load(
            DEMO_CONFIG, [*common, *overrides, f"train.output_dir={folder}"]
        )
        started = time.perf_counter()
        # A fresh copy each time: LoRA is injected into the model it is given.
        unlearner = Unlearner(config, copy.deepcopy(model), tokenizer)
        unlearner.train()
        train_s = time.perf_counter() - started
        result = evaluate(unlearner.model, tokenizer, suite) | {
            "train_s": train_s,
            "overrides": overrides,
        }
        folder.with_suffix(".json").write_text(json.dumps(result))
        log.info(
            "%s: harmless %.3f over-refusal %.3f perplexity %.3f (train %.0f s)",
            name,
            result["harmless_rate"],
            result["over_refusal_rate"],
            result["perplexity"],
            train_s,
        )
    # Classified again by the current rules, so that every row reads the same way.
    results = {"before": rejudge(json.loads(before_path.read_text()))}
    results |= {
        path.stem.replace("_", " "): rejudge(json.loads(path.read_text()))
        for path in sorted(out.glob("*.json"))
        if path != before_path
    }
    print(table(results))
    plot_tradeoff(results, out / "tradeoff.png")


def table(results: dict) -> str:
    before = results["before"]
    lines = [
        "| model | harmless (held-out) | harmless (OOD) | clean refusals | degenerate (harmful) "
        "| over-refusal | degenerate (benign) | perplexity (change) | train time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, result in results.items():
        change = result["perplexity"] / before["perplexity"] - 1
        train = f"{result['train_s']:.0f} s" if "train_s" in result else "-"
        classes = result["classes"]
        lines.append(
            f"| {'untouched' if name == 'before' else name} | {result['harmless_rate']:.1%} | "
            f"{result['robustness'].get('ood', float('nan')):.1%} | "
            f"{classes['harmful']['refusal']:.1%} | "
            f"{classes['harmful']['degenerate']:.1%} | {result['over_refusal_rate']:.1%} | "
            f"{classes['benign']['degenerate']:.1%} | "
            f"{result['perplexity']:.2f} ({change:+.1%}) | {train} |"
        )
    return "\n".join(lines)


def plot_tradeoff(results: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 5), layout="constrained")
    axes = figure.subplots()
    markers = "osD^v<>Pp*Xh"
    for index, (name, result) in enumerate(results.items()):
        # A legend, not labels on the points: methods often land on the same point.
        axes.scatter(
            result["over_refusal_rate"],
            result["harmless_rate"],
            s=50,
            zorder=3,
            marker=markers[index % len(markers)],
            label="untouched" if name == "before" else name,
        )
    axes.axvspan(0, 0.05, ymin=(0.95 + 0.05) / 1.1, color="green", alpha=0.15, label="target")
    axes.set_xlabel("over-refusal on benign prompts (refused, deflected or degenerate)")
    axes.set_ylabel("harmless rate on held-out harmful prompts")
    axes.set_xlim(-0.05, 1.05)
    axes.set_ylim(-0.05, 1.05)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=7)
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
