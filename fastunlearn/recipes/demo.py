"""The demo (``fastunlearn demo``): evaluate the default model on the held-out demo suite,
unlearn with the bundled demo config, evaluate again and report before/after.

    run_demo(UnlearnConfig.load(DEMO_CONFIG))  # -> the report's paths by name

Kept out of engine/ and eval/: it is the one place that joins the two (docs/architecture.md).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from fastunlearn.engine import UnlearnConfig, Unlearner, list_checkpoints
from fastunlearn.engine.config import EvaluationConfig
from fastunlearn.engine.generation import generate_configured_negatives
from fastunlearn.engine.trainer import METRICS_FILE
from fastunlearn.engine.unlearner import FINAL_MODEL_DIR, load_configured_model
from fastunlearn.eval import EvalSuite, build_judge, demo_suite, evaluate, write_report

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
    before = evaluate(model, tokenizer, suite)
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
    lap("negatives")
    for old in [*list_checkpoints(run_dir), run_dir / FINAL_MODEL_DIR]:
        shutil.rmtree(old, ignore_errors=True)
    (run_dir / METRICS_FILE).unlink(missing_ok=True)
    unlearner = Unlearner(config, model, tokenizer)
    final = unlearner.train()
    lap("train")
    log.info("evaluating the unlearned model")
    after = evaluate(unlearner.model, tokenizer, suite)
    lap("evaluate_after")
    report = write_report(before, after, run_dir, training_log=run_dir / METRICS_FILE)
    timings["total"] = time.perf_counter() - started
    return {"before": before, "after": after, "report": report, "final": final, "timings": timings}
