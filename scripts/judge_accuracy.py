"""How well the judges agree with responses labelled by reading them
(fastunlearn/demo_data/judge_labels.jsonl; README "Judging responses").

    python scripts/judge_accuracy.py                       # the rule judge's per-class table
    python scripts/judge_accuracy.py --generative default  # + a generative judge (any local causal LM)
    python scripts/judge_accuracy.py --calibrate           # the degeneration thresholds the labels favour

The rule judge is scored on all four classes; a generative judge answers only "complied or
not", so it is scored on the harmful prompts' responses against labels collapsed to
compliance / not compliance (the harmless verdict), as is the rule judge beside it.
"""

from __future__ import annotations

import argparse
import itertools
import json

from fastunlearn.eval import (
    RESPONSE_CLASSES,
    DegenerationThresholds,
    RuleJudge,
    build_judge,
    demo_data_path,
    is_degenerate,
    per_class_agreement,
)


def read_labels() -> list[dict]:
    path = demo_data_path("judge_labels.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def class_table(agreement: dict, classes=RESPONSE_CLASSES) -> str:
    def cell(value):
        return "-" if value is None else f"{value:.2f}"

    lines = ["| class | precision | recall | labelled |", "| --- | ---: | ---: | ---: |"]
    for kind in classes:
        scores = agreement["classes"].get(kind, {"precision": None, "recall": None, "support": 0})
        lines.append(f"| {kind} | {cell(scores['precision'])} | {cell(scores['recall'])} | {scores['support']} |")
    lines.append(f"| accuracy | | {agreement['accuracy']:.2f} | {sum(s['support'] for s in agreement['classes'].values())} |")
    return "\n".join(lines)


def harmless_verdicts(kinds) -> list[str]:
    return ["complied" if kind == "compliance" else "not complied" for kind in kinds]


def calibrate(rows: list[dict]) -> None:
    """Grid-search the three degeneration thresholds for the best F1 of "degenerate"."""
    labelled = [row["label"] == "degenerate" for row in rows]
    best = []
    for trigram, distinct, letters in itertools.product((0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5),
                                                        (0.2, 0.3, 0.35, 0.4, 0.5, 0.6), (0.3, 0.4, 0.5, 0.6)):
        thresholds = DegenerationThresholds(trigram, distinct, letters)
        flagged = [is_degenerate(row["response"], thresholds) for row in rows]
        hits = sum(f and l for f, l in zip(flagged, labelled, strict=True))
        precision, recall = hits / max(sum(flagged), 1), hits / max(sum(labelled), 1)
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
        best.append((f1, precision, recall, thresholds))
    best.sort(key=lambda entry: -entry[0])
    for f1, precision, recall, thresholds in best[:5]:
        print(f"F1 {f1:.3f} precision {precision:.3f} recall {recall:.3f}: {thresholds}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--generative", metavar="MODEL", help='a local causal LM folder or "default"')
    parser.add_argument("--template", help="the generative judge's template file")
    parser.add_argument("--calibrate", action="store_true")
    args = parser.parse_args()
    rows = read_labels()
    if args.calibrate:
        calibrate(rows)
        return
    rules = RuleJudge()
    predicted = rules.classify([row["prompt"] for row in rows], [row["response"] for row in rows])
    print(f"Rule judge, {len(rows)} labelled responses:\n")
    print(class_table(per_class_agreement([row["label"] for row in rows], predicted)))
    harmful = [row for row in rows if row["prompt_kind"] == "harmful"]
    truth = harmless_verdicts(row["label"] for row in harmful)
    verdict_classes = ("complied", "not complied")
    rule_verdicts = harmless_verdicts(kind for kind, row in zip(predicted, rows, strict=True)
                                      if row["prompt_kind"] == "harmful")
    print(f"\nComplied or not, {len(harmful)} responses to harmful prompts, rule judge:\n")
    print(class_table(per_class_agreement(truth, rule_verdicts), verdict_classes))
    if args.generative:
        judge = build_judge("generative", args.generative, args.template)
        harmless = judge.judge([row["prompt"] for row in harmful], [row["response"] for row in harmful])
        generative = ["not complied" if verdict else "complied" for verdict in harmless]
        print(f"\nComplied or not, generative judge ({judge.name}):\n")
        print(class_table(per_class_agreement(truth, generative), verdict_classes))


if __name__ == "__main__":
    main()
