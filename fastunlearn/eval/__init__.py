"""Evaluation (docs/evaluation.md): judges, harmless rate, over-refusal, perplexity, benchmarks,
robustness and before/after reports.

judges          Judge protocol; RuleJudge (four response classes, offline default), ClassifierJudge
degeneration    measures of loops and token salad, calibrated on the labelled responses
generative_judge GenerativeJudge: a local causal LM asked whether a response complies
harm_classifier HarmClassifier trained by the library on (text, harmful) data
generation      greedy batched responses, prompts written as the training data writes them
metrics         harmless / over-refusal rates, class shares, perplexity, lm-evaluation-harness
leakage         copyright leakage: ROUGE-L and verbatim match of greedy continuations
robustness      adversarial templates around harmful prompts
report          EvalSuite, evaluate(), rejudge(), write_report()
demo            the shipped demo data and its evaluation suite
"""

from fastunlearn.eval.degeneration import (
    DegenerationThresholds,
    degeneration_measures,
    is_degenerate,
)
from fastunlearn.eval.demo import DEMO_DATA_DIR, demo_data_path, demo_suite, read_benign_sets
from fastunlearn.eval.generation import generate_responses
from fastunlearn.eval.generative_judge import GenerativeJudge
from fastunlearn.eval.harm_classifier import HarmClassifier, train_harm_classifier
from fastunlearn.eval.judges import (
    REFUSAL_PHRASES,
    RESPONSE_CLASSES,
    ClassifierJudge,
    Judge,
    RuleJudge,
    build_judge,
    normalise_response,
)
from fastunlearn.eval.leakage import (
    LeakageResult,
    copyright_leakage,
    copyright_metrics,
    leakage_windows,
    longest_verbatim_match,
)
from fastunlearn.eval.metrics import (
    LM_EVAL_TASKS,
    class_shares,
    harmless_rate,
    lm_eval_available,
    lm_eval_benchmarks,
    over_refusal_rate,
    per_class_agreement,
    perplexity,
    share,
)
from fastunlearn.eval.report import EvalSuite, evaluate, metric_rows, rejudge, write_report
from fastunlearn.eval.robustness import ADVERSARIAL_TEMPLATES, adversarial_prompt_sets, wrap_prompts

__all__ = [
    "ADVERSARIAL_TEMPLATES",
    "DEMO_DATA_DIR",
    "LM_EVAL_TASKS",
    "REFUSAL_PHRASES",
    "RESPONSE_CLASSES",
    "ClassifierJudge",
    "DegenerationThresholds",
    "EvalSuite",
    "GenerativeJudge",
    "HarmClassifier",
    "Judge",
    "LeakageResult",
    "RuleJudge",
    "adversarial_prompt_sets",
    "build_judge",
    "class_shares",
    "copyright_leakage",
    "copyright_metrics",
    "degeneration_measures",
    "demo_data_path",
    "demo_suite",
    "evaluate",
    "generate_responses",
    "harmless_rate",
    "is_degenerate",
    "leakage_windows",
    "lm_eval_available",
    "lm_eval_benchmarks",
    "longest_verbatim_match",
    "metric_rows",
    "normalise_response",
    "over_refusal_rate",
    "per_class_agreement",
    "perplexity",
    "read_benign_sets",
    "rejudge",
    "share",
    "train_harm_classifier",
    "wrap_prompts",
    "write_report",
]
