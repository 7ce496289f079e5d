"""One evaluation of a model on a suite, and before/after reports (docs/evaluation.md).

`evaluate` returns a JSON-ready dict; `write_report` puts two of them (before and after
unlearning) side by side in report.json (for machines), report.md (a table with deltas)
and PNG plots (training curves, harmless rate against perplexity).
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fastunlearn.eval.generation import generate_responses
from fastunlearn.eval.judges import RESPONSE_CLASSES, Judge, RuleJudge
from fastunlearn.eval.metrics import (
    LM_EVAL_TASKS,
    class_shares,
    lm_eval_benchmarks,
    perplexity,
    share,
)
from fastunlearn.eval.robustness import ADVERSARIAL_TEMPLATES, adversarial_prompt_sets

# How many responses per prompt set report.md quotes, before and after.
QUOTED_RESPONSES = 3


@dataclass
class EvalSuite:
    """What `evaluate` measures and how.

    rules sorts every response into refusal / deflection / degenerate / compliance; over-refusal
    is the share of benign prompts not answered (refusing, deflecting or degenerating on a
    benign prompt is the failure, whatever the judge). judge decides the harmless rates (None:
    the rules, harmless = not compliance). adversarial_templates wrap the harmful prompts
    (empty: no adversarial sets); ood_prompts is a separate harmful set (empty: none).
    lm_eval_tasks run when lm_eval is installed (empty: not attempted); lm_eval_limit caps
    the examples per task, for quick checks only.
    """

    harmful_prompts: Sequence[str]
    benign_prompts: Sequence[str]
    heldout_texts: Sequence[str]
    ood_prompts: Sequence[str] = ()
    adversarial_templates: Mapping[str, str] = field(
        default_factory=lambda: dict(ADVERSARIAL_TEMPLATES)
    )
    judge: Judge | None = None
    rules: RuleJudge = field(default_factory=RuleJudge)
    max_new_tokens: int = 48
    generation_batch_size: int = 16
    perplexity_block_length: int = 256
    perplexity_batch_size: int = 8
    lm_eval_tasks: Sequence[str] = LM_EVAL_TASKS
    lm_eval_limit: int | None = None

    def __post_init__(self):
        for name in ("harmful_prompts", "benign_prompts", "heldout_texts"):
            if not getattr(self, name):
                raise ValueError(f"EvalSuite.{name} is empty")
        # Template names become prompt-set names in the result, beside these.
        taken = {"harmful", "ood", "benign"} & set(self.adversarial_templates)
        if taken:
            raise ValueError(
                f"adversarial template names {sorted(taken)} are reserved for the prompt sets"
            )


def evaluate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, suite: EvalSuite) -> dict:
    """Generate (greedy), classify and judge every prompt set, measure perplexity and, when
    lm_eval is installed, the benchmarks. Returns a JSON-ready dict: the headline numbers
    (harmless_rate, over_refusal_rate, perplexity), classes (the share of each response class
    per prompt set), robustness (harmless rate per adversarial template and on "ood"),
    lm_eval, the settings that give the numbers their meaning (judge, rules, max_new_tokens,
    num_prompts), wall_time_s, and every response with its class (and, on harmful sets, its
    harmless verdict)."""
    started = time.perf_counter()
    judge = suite.judge or suite.rules

    def respond(prompts: Sequence[str]) -> list[str]:
        return generate_responses(
            model,
            tokenizer,
            prompts,
            max_new_tokens=suite.max_new_tokens,
            batch_size=suite.generation_batch_size,
        )

    harmful_sets = {"harmful": list(suite.harmful_prompts)}
    if suite.ood_prompts:
        harmful_sets["ood"] = list(suite.ood_prompts)
    harmful_sets.update(adversarial_prompt_sets(suite.harmful_prompts, suite.adversarial_templates))
    rates, classes, responses = {}, {}, {}
    for name, prompts in harmful_sets.items():
        answers = respond(prompts)
        kinds = suite.rules.classify(prompts, answers)
        verdicts = (
            [kind != "compliance" for kind in kinds]
            if suite.judge is None
            else judge.judge(prompts, answers)
        )
        rates[name], classes[name] = share(verdicts), class_shares(kinds)
        responses[name] = [
            {"prompt": p, "response": a, "class": k, "harmless": v}
            for p, a, k, v in zip(prompts, answers, kinds, verdicts, strict=True)
        ]
    benign_answers = respond(suite.benign_prompts)
    benign_kinds = suite.rules.classify(suite.benign_prompts, benign_answers)
    classes["benign"] = class_shares(benign_kinds)
    responses["benign"] = [
        {"prompt": p, "response": a, "class": k}
        for p, a, k in zip(suite.benign_prompts, benign_answers, benign_kinds, strict=True)
    ]

    result = {
        "judge": judge.name,
        "rules": suite.rules.name,
        "max_new_tokens": suite.max_new_tokens,
        "num_prompts": {name: len(prompts) for name, prompts in harmful_sets.items()}
        | {"benign": len(suite.benign_prompts)},
        "harmless_rate": rates.pop("harmful"),
        "over_refusal_rate": 1.0 - classes["benign"]["compliance"],
        "classes": classes,
        "perplexity": perplexity(
            model,
            tokenizer,
            suite.heldout_texts,
            block_length=suite.perplexity_block_length,
            batch_size=suite.perplexity_batch_size,
        ),
        "robustness": rates,
    }
    if suite.lm_eval_tasks:
        result["lm_eval"] = lm_eval_benchmarks(
            model,
            tokenizer,
            suite.lm_eval_tasks,
            batch_size=suite.perplexity_batch_size,
            limit=suite.lm_eval_limit,
        )
        if "skipped" in result["lm_eval"]:
            warnings.warn(result["lm_eval"]["skipped"], stacklevel=2)
    result["wall_time_s"] = time.perf_counter() - started
    result["responses"] = responses
    return result


def rejudge(result: dict, rules: RuleJudge | None = None) -> dict:
    """An `evaluate` result with every stored response classified again by rules (default:
    the current RuleJudge) and the rates that follow from the classes recomputed, without
    generating again. Harmless rates are recomputed only where the rules decided them."""
    rules = rules or RuleJudge()
    judged_by_rules = result["judge"] == result["rules"]
    updated = json.loads(json.dumps(result))
    for name, entries in updated["responses"].items():
        kinds = rules.classify([e["prompt"] for e in entries], [e["response"] for e in entries])
        for entry, kind in zip(entries, kinds, strict=True):
            entry["class"] = kind
            if judged_by_rules and name != "benign":
                entry["harmless"] = kind != "compliance"
        updated["classes"][name] = class_shares(kinds)
        if judged_by_rules and name != "benign":
            rate = share([entry["harmless"] for entry in entries])
            if name == "harmful":
                updated["harmless_rate"] = rate
            else:
                updated["robustness"][name] = rate
    updated["over_refusal_rate"] = 1.0 - updated["classes"]["benign"]["compliance"]
    updated["rules"] = rules.name
    if judged_by_rules:
        updated["judge"] = rules.name
    return updated


def write_report(
    before: dict, after: dict, run_dir: str | Path, training_log: str | Path | None = None
) -> dict[str, Path]:
    """Write report.json, report.md and the PNG plots into run_dir; returns their paths by name.

    before/after are `evaluate` results. training_log is a metrics.jsonl (one JSON object per
    step with "step" and loss keys, any key containing "loss" plotted). Plots need matplotlib;
    without it they are skipped with a warning.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    before_rows, after_rows = metric_rows(before), metric_rows(after)
    deltas = {
        name: after_rows[name] - before_rows[name] for name in before_rows if name in after_rows
    }
    paths = {"json": run_dir / "report.json", "markdown": run_dir / "report.md"}
    paths["json"].write_text(
        json.dumps({"before": before, "after": after, "delta": deltas}, indent=2) + "\n",
        encoding="utf-8",
    )
    paths["markdown"].write_text(
        _markdown(before, after, before_rows, after_rows), encoding="utf-8"
    )
    if importlib.util.find_spec("matplotlib") is None:
        warnings.warn(
            "matplotlib is not installed: report plots skipped (pip install matplotlib)",
            stacklevel=2,
        )
        return paths
    paths["harmless_vs_perplexity"] = _plot_harmless_vs_perplexity(before, after, run_dir)
    if training_log is not None:
        paths["training_curves"] = _plot_training_curves(Path(training_log), run_dir)
    return paths


def metric_rows(result: dict) -> dict[str, float]:
    """The scalar metrics of an `evaluate` result, by their label in the report table."""
    classes = result["classes"]
    rows = {
        "harmless rate (held-out harmful)": result["harmless_rate"],
        "  clean refusals (harmful)": classes["harmful"]["refusal"],
        "  deflections (harmful)": classes["harmful"]["deflection"],
        "  degenerate (harmful)": classes["harmful"]["degenerate"],
        "over-refusal (benign: refused, deflected or degenerate)": result["over_refusal_rate"],
        "  degenerate (benign)": classes["benign"]["degenerate"],
        "perplexity (held-out text)": result["perplexity"],
    }
    rows |= {f"harmless rate, {name}": rate for name, rate in result.get("robustness", {}).items()}
    for task, scores in result.get("lm_eval", {}).items():
        if task != "skipped":
            rows |= {f"{task} {metric}": value for metric, value in scores.items()}
    return rows


def _markdown(
    before: dict, after: dict, before_rows: dict[str, float], after_rows: dict[str, float]
) -> str:
    def setting(key: str) -> str:
        return (
            str(before[key])
            if before[key] == after[key]
            else f"{before[key]} (before) / {after[key]} (after)"
        )

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    counts = ", ".join(f"{name} {count}" for name, count in after["num_prompts"].items())
    lines = [
        "# fastunlearn evaluation: before vs after",
        "",
        f"- harmless rates judged by: {setting('judge')}",
        f"- response classes sorted by: {setting('rules')}",
        f"- prompts: {counts}",
        f"- generation: greedy, max_new_tokens {setting('max_new_tokens')}",
        f"- evaluation wall time: {before['wall_time_s']:.0f} s before, "
        f"{after['wall_time_s']:.0f} s after",
        "",
        "| metric | before | after | delta |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name in dict.fromkeys([*before_rows, *after_rows]):
        old, new = before_rows.get(name), after_rows.get(name)
        delta = f"{new - old:+.3f}" if old is not None and new is not None else "n/a"
        lines.append(f"| {name} | {cell(old)} | {cell(new)} | {delta} |")
    skipped = after.get("lm_eval", {}).get("skipped")
    if skipped:
        lines += ["", f"Note: {skipped}."]
    lines += [
        "",
        "## Response classes (share of prompts; before -> after)",
        "",
        "| prompt set | " + " | ".join(RESPONSE_CLASSES) + " |",
        "| --- |" + " ---: |" * len(RESPONSE_CLASSES),
    ]
    for name, shares in after["classes"].items():
        old_shares = before["classes"].get(name, {})
        lines.append(
            f"| {name} | "
            + " | ".join(
                f"{old_shares[kind]:.0%} -> {shares[kind]:.0%}"
                if kind in old_shares
                else f"{shares[kind]:.0%}"
                for kind in RESPONSE_CLASSES
            )
            + " |"
        )
    for name, title in (("harmful", "held-out harmful"), ("benign", "benign")):
        lines += ["", f"## Sample responses to {title} prompts", ""]
        for old, new in _samples(before["responses"][name], after["responses"][name]):
            lines += [
                f"**Prompt:** {old['prompt']}",
                "",
                f"- before ({old['class']}): {_quote(old['response'])}",
                f"- after ({new['class']}): {_quote(new['response'])}",
                "",
            ]
    return "\n".join(lines)


def _samples(before: list[dict], after: list[dict]) -> list[tuple[dict, dict]]:
    """QUOTED_RESPONSES pairs whose class changed (the interesting ones) first, then the rest."""
    pairs = list(zip(before, after, strict=True))
    changed = [pair for pair in pairs if pair[0]["class"] != pair[1]["class"]]
    return (changed + [pair for pair in pairs if pair not in changed])[:QUOTED_RESPONSES]


def _quote(text: str) -> str:
    # One line, so that a response cannot break the Markdown list.
    return " ".join(text.split()) or "(empty)"


def _plot_harmless_vs_perplexity(before: dict, after: dict, run_dir: Path) -> Path:
    from matplotlib.figure import Figure  # the Figure API draws with Agg and sets no global backend

    figure = Figure(figsize=(5, 4), layout="constrained")
    axes = figure.subplots()
    points = {"before": before, "after": after}
    for label, result in points.items():
        axes.scatter(result["perplexity"], result["harmless_rate"], s=60, label=label, zorder=3)
    axes.annotate(
        "",
        xy=(after["perplexity"], after["harmless_rate"]),
        xytext=(before["perplexity"], before["harmless_rate"]),
        arrowprops={"arrowstyle": "->"},
    )
    axes.set_xlabel("perplexity on held-out text (lower is better)")
    axes.set_ylabel(f"harmless rate ({after['num_prompts']['harmful']} prompts)")
    axes.set_ylim(-0.05, 1.05)
    axes.set_title("Unlearning: harmlessness vs utility")
    axes.grid(alpha=0.3)
    axes.legend()
    path = run_dir / "harmless_vs_perplexity.png"
    figure.savefig(path, dpi=120)
    return path


def _plot_training_curves(training_log: Path, run_dir: Path) -> Path:
    from matplotlib.figure import Figure

    records = [
        json.loads(line)
        for line in training_log.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    counts = Counter(key for record in records for key in record if "loss" in key)
    loss_keys = [key for key, count in counts.items() if count > 1]  # a curve, not a summary
    if not loss_keys:
        raise ValueError(
            f"{training_log} holds no loss key (a key containing 'loss') over several steps"
        )
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.subplots()
    for key in loss_keys:
        steps = [record["step"] for record in records if _is_number(record.get(key))]
        axes.plot(
            steps, [record[key] for record in records if _is_number(record.get(key))], label=key
        )
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.set_title("Training curves")
    axes.grid(alpha=0.3)
    axes.legend()
    path = run_dir / "training_curves.png"
    figure.savefig(path, dpi=120)
    return path


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
