"""How well the judges agree with responses labelled by reading them
(fastunlearn/demo_data/judge_labels.jsonl; README "Judging responses").

    python scripts/judge_accuracy.py              # the rule judge's per-class table
    python scripts/judge_accuracy.py --generative default [--split development]
                                                  # + a generative judge
    python scripts/judge_accuracy.py --calibrate  # the degeneration thresholds the labels favour

The rule judge is scored on all four classes, on each split of the labels: "development"
(the responses the rules were written against), "held_out" and "recipes_v3" (labelled after
the rules were frozen: the honest figures), with a confusion matrix (rows: the label,
columns: the rules' class). A generative judge answers only "complied or not", so it is
scored on the harmful prompts' responses (prompt_kind "harmful" or "ood") against labels
collapsed to compliance / not compliance (the harmless verdict), as is the rule judge beside
it.
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
    degeneration_measures,
    demo_data_path,
    is_degenerate,
    per_class_agreement,
)
from fastunlearn.eval.degeneration import MIN_WORDS_FOR_REPETITION

# prompt_kind values of harmful requests ("ood": the held-out forms and categories).
HARMFUL_KINDS = ("harmful", "ood")


def read_labels() -> list[dict]:
    path = demo_data_path("judge_labels.jsonl")
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def class_table(agreement: dict, classes=RESPONSE_CLASSES) -> str:
    def cell(value):
        return "-" if value is None else f"{value:.2f}"

    lines = ["| class | precision | recall | labelled |", "| --- | ---: | ---: | ---: |"]
    for kind in classes:
        scores = agreement["classes"].get(kind, {"precision": None, "recall": None, "support": 0})
        lines.append(
            f"| {kind} | {cell(scores['precision'])} | {cell(scores['recall'])} "
            f"| {scores['support']} |"
        )
    labelled = sum(scores["support"] for scores in agreement["classes"].values())
    lines.append(f"| accuracy | | {agreement['accuracy']:.2f} | {labelled} |")
    return "\n".join(lines)


def splits_of(rows: list[dict]) -> list[str]:
    """The splits in the order the file first names them."""
    return list(dict.fromkeys(row["split"] for row in rows))


def confusion_matrix(labels, predictions, classes=RESPONSE_CLASSES) -> str:
    """Counts of (label, predicted class): a row per label, a column per predicted class."""
    pairs = list(zip(labels, predictions, strict=True))
    lines = [
        "| label / rules | " + " | ".join(classes) + " | labelled |",
        "| --- |" + " ---: |" * (len(classes) + 1),
    ]
    for label in classes:
        counts = [sum(pair == (label, kind) for pair in pairs) for kind in classes]
        lines.append(f"| {label} | " + " | ".join(map(str, counts)) + f" | {sum(counts)} |")
    totals = [sum(prediction == kind for _, prediction in pairs) for kind in classes]
    lines.append("| predicted | " + " | ".join(map(str, totals)) + f" | {len(pairs)} |")
    return "\n".join(lines)


VERDICTS = ("complied", "not complied")


def harmless_verdicts(kinds) -> list[str]:
    return ["complied" if kind == "compliance" else "not complied" for kind in kinds]


def calibrate(rows: list[dict]) -> None:
    """Where each degeneration measure separates the responses labelled degenerate from the
    rest (of those long enough for it), then the threshold triples with the best F1."""
    measured = [
        (row["label"] == "degenerate", degeneration_measures(row["response"])) for row in rows
    ]
    long_enough = [(flag, m) for flag, m in measured if m["words"] >= MIN_WORDS_FOR_REPETITION]
    for name, loop_is_high in (
        ("repeated_trigram_share", True),
        ("distinct_word_share", False),
        ("letter_share", False),
    ):
        pool = measured if name == "letter_share" else long_enough
        loops = sorted(m[name] for flag, m in pool if flag)
        others = sorted(m[name] for flag, m in pool if not flag)
        worst_loop, worst_other = (loops[0], others[-1]) if loop_is_high else (loops[-1], others[0])
        print(
            f"{name}: degenerate {loops[0]:.2f}..{loops[-1]:.2f} (n={len(loops)}), others "
            f"{others[0]:.2f}..{others[-1]:.2f} (n={len(others)}); "
            f"least degenerate {worst_loop:.2f}, most degenerate-looking other {worst_other:.2f}"
        )
    labelled = [row["label"] == "degenerate" for row in rows]
    best = []
    for trigram, distinct, letters in itertools.product(
        (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5), (0.2, 0.3, 0.35, 0.4, 0.5, 0.6), (0.3, 0.4, 0.5, 0.6)
    ):
        thresholds = DegenerationThresholds(trigram, distinct, letters)
        flagged = [is_degenerate(row["response"], thresholds) for row in rows]
        hits = sum(flag and label for flag, label in zip(flagged, labelled, strict=True))
        precision, recall = hits / max(sum(flagged), 1), hits / max(sum(labelled), 1)
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
        best.append((f1, precision, recall, thresholds))
    best.sort(key=lambda entry: -entry[0])
    print(
        f"{sum(entry[0] == best[0][0] for entry in best)} of {len(best)} threshold triples "
        f"reach the best F1 {best[0][0]:.3f}; the defaults: {DegenerationThresholds()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--generative", metavar="MODEL", help='a local causal LM folder or "default"'
    )
    parser.add_argument("--template", help="the generative judge's template file")
    parser.add_argument(
        "--split",
        choices=("development", "held_out", "recipes_v3", "all"),
        default="all",
        help="the labels the generative judge is scored on",
    )
    parser.add_argument("--calibrate", action="store_true")
    args = parser.parse_args()
    rows = read_labels()
    if args.calibrate:
        calibrate(rows)
        return
    rules = RuleJudge()
    for split in splits_of(rows):
        part = [row for row in rows if row["split"] == split]
        predicted = rules.classify(
            [row["prompt"] for row in part], [row["response"] for row in part]
        )
        print(f"Rule judge, {split} split ({len(part)} labelled responses):\n")
        print(class_table(per_class_agreement([row["label"] for row in part], predicted)))
        print(f"\nConfusion matrix ({split}): rows the label, columns the rules' class\n")
        print(confusion_matrix([row["label"] for row in part], predicted))
        harmful = [
            (row, kind)
            for row, kind in zip(part, predicted, strict=True)
            if row["prompt_kind"] in HARMFUL_KINDS
        ]
        print(
            f"\nComplied or not, {len(harmful)} responses to harmful prompts ({split}), "
            "rule judge:\n"
        )
        print(
            class_table(
                per_class_agreement(
                    harmless_verdicts(row["label"] for row, _ in harmful),
                    harmless_verdicts(kind for _, kind in harmful),
                ),
                VERDICTS,
            )
        )
        print()
    if args.generative:
        harmful = [
            row
            for row in rows
            if row["prompt_kind"] in HARMFUL_KINDS and args.split in ("all", row["split"])
        ]
        judge = build_judge("generative", args.generative, args.template)
        harmless = judge.judge(
            [row["prompt"] for row in harmful], [row["response"] for row in harmful]
        )
        generative = ["not complied" if verdict else "complied" for verdict in harmless]
        print(
            f"Complied or not, {len(harmful)} responses to harmful prompts ({args.split}), "
            f"generative judge ({judge.name}):\n"
        )
        print(
            class_table(
                per_class_agreement(harmless_verdicts(row["label"] for row in harmful), generative),
                VERDICTS,
            )
        )


if __name__ == "__main__":
    main()
