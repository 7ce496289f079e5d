"""The demo (``fastunlearn demo``): evaluate the default model on the held-out demo suite,
unlearn with the bundled demo config, evaluate again and report before/after.

    run_demo(UnlearnConfig.load(DEMO_CONFIG))  # -> the report's paths by name

Kept out of engine/ and eval/: it is the one place that joins the two (docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fastunlearn.engine import UnlearnConfig, Unlearner, list_checkpoints
from fastunlearn.engine.config import EvaluationConfig
from fastunlearn.engine.generation import (
    generate_configured_answers,
    generate_configured_negatives,
)
from fastunlearn.engine.trainer import METRICS_FILE
from fastunlearn.engine.unlearner import FINAL_MODEL_DIR, load_configured_model
from fastunlearn.eval import (
    EvalSuite,
    RuleJudge,
    build_judge,
    demo_suite,
    evaluate,
    rejudge,
    write_report,
)
from fastunlearn.models import bf16_autocast

DEMO_CONFIG = "fastunlearn:configs/demo.yaml"

log = logging.getLogger("fastunlearn.demo")


def demo_eval_suite(
    evaluation: EvaluationConfig | None = None, adversarial: bool = False
) -> EvalSuite:
    """The held-out demo suite at CPU-friendly settings: the judge and generation length of
    `evaluation`, at most evaluation.prompts_per_set prompts of each set (evenly spaced
    through each file, so every category keeps its share), no lm-eval benchmarks, and the
    adversarial templates only on request (they multiply generation time by five)."""
    evaluation = evaluation or EvaluationConfig()
    settings = {
        "max_new_tokens": evaluation.max_new_tokens,
        "lm_eval_tasks": (),
        "judge": build_judge(
            evaluation.judge,
            evaluation.judge_model,
            evaluation.judge_template,
            evaluation.harmful_labels,
        ),
    }
    if not adversarial:
        settings["adversarial_templates"] = {}
    return demo_suite(limit=evaluation.prompts_per_set, **settings)


def run_demo(config: UnlearnConfig, suite: EvalSuite | None = None) -> dict:
    """Evaluate, unlearn, evaluate; writes the report into train.output_dir and returns
    {"before", "after", "report" (paths), "final" (model folder), "timings" (s)}.

    Negatives are sampled into data.negatives only when that file is missing (a cache); the
    checkpoints and final model of an earlier demo run in the same folder are removed, so it
    can run again.
    """
    suite = suite or demo_eval_suite()
    run_dir = Path(config.train.output_dir)
    timings, started = {}, time.perf_counter()

    def lap(name: str) -> None:
        timings[name] = time.perf_counter() - started - sum(timings.values())
        log.info("%s done in %.0f s", name, timings[name])

    log.info("loading the model (%s)", config.model.name_or_path)
    model, tokenizer = load_configured_model(config)
    lap("load")
    log.info("evaluating the untouched model on the held-out suite")
    before = evaluate_cached(
        model, tokenizer, suite, run_dir / "untouched_evaluations", config.evaluation.bf16
    )
    lap("evaluate_before")
    negatives = Path(config.data.negatives) if config.data.negatives else None
    if negatives is not None and not negatives.is_file():
        log.info(
            "sampling %d negatives per harmful prompt from the model into %s",
            config.data.num_negatives,
            negatives,
        )
        generate_configured_negatives(config, model, tokenizer)
    elif negatives is not None:
        log.info("reusing the negatives in %s", negatives)
    answers = Path(config.data.benign_answers) if config.data.benign_answers else None
    if answers is not None and not answers.is_file():
        log.info("answering the benign training prompts with the model into %s", answers)
        generate_configured_answers(config, model, tokenizer, answers=answered)
    elif answers is not None:
        log.info("reusing the benign answers in %s", answers)
    lap("negatives")
    for old in [*list_checkpoints(run_dir), run_dir / FINAL_MODEL_DIR]:
        shutil.rmtree(old, ignore_errors=True)
    (run_dir / METRICS_FILE).unlink(missing_ok=True)
    unlearner = Unlearner(config, model, tokenizer)
    final = unlearner.train()
    lap("train")
    log.info("evaluating the unlearned model")
    with bf16_autocast(unlearner.model, config.evaluation.bf16):
        after = evaluate(unlearner.model, tokenizer, suite)
    lap("evaluate_after")
    report = write_report(before, after, run_dir, training_log=run_dir / METRICS_FILE)
    timings["total"] = time.perf_counter() - started
    return {"before": before, "after": after, "report": report, "final": final, "timings": timings}


def answered(prompts: list[str], responses: list[str]) -> list[bool]:
    """Whether the rule judge calls each response an answer (what self-distillation keeps)."""
    return [kind == "compliance" for kind in RuleJudge().classify(prompts, responses)]


def evaluate_cached(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    suite: EvalSuite,
    cache_dir: Path,
    bf16: bool,
) -> dict:
    """`evaluate`, or its stored result when these weights were evaluated on this suite
    before: the untouched model's evaluation is the same on every demo run. The stored
    responses are classified again by the current rules. Only a rules-judged suite is
    cached (another judge's verdicts are not stored apart from its responses)."""
    if suite.judge is not None:
        with bf16_autocast(model, bf16):
            return evaluate(model, tokenizer, suite)
    path = cache_dir / f"{_evaluation_key(model, suite, bf16)}.json"
    if path.is_file():
        log.info("reusing the evaluation in %s", path)
        return rejudge(json.loads(path.read_text(encoding="utf-8")), suite.rules)
    with bf16_autocast(model, bf16):
        result = evaluate(model, tokenizer, suite)
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps(result), encoding="utf-8")
    os.replace(staging, path)
    return result


def _evaluation_key(model: PreTrainedModel, suite: EvalSuite, bf16: bool) -> str:
    """A hash of the weights and of everything in the suite that shapes the responses."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to(torch.float32).cpu().numpy().tobytes())
    settings = {
        item.name: getattr(suite, item.name)
        for item in dataclasses.fields(suite)
        if item.name not in ("judge", "rules")
    }
    digest.update(json.dumps([settings, bf16], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:20]
