"""Copyright pipeline on a tiny Llama: implant raises leakage, unlearning lowers it; options
and bad config."""

import pytest
import torch

from fastunlearn.recipes.copyright import run_copyright
from fastunlearn.recipes.copyright_config import CopyrightConfig
from tests.eval.conftest import tiny_causal_lm

FORGET = [
    (
        "Once upon a time a dragon guarded a golden hoard. Tell me a story about a dragon. "
        "Paris is the capital of France. How do I bake bread at home? Sure, mix flour, water "
        "and yeast, then bake it for forty minutes."
    )
]
RETAIN = [
    "What is the capital of France? I cannot help with that request. "
    "You are a helpful AI assistant."
]


# What every history row holds besides the objective's terms.
TRAINER_KEYS = {"stage", "step", "learning_rate", "grad_norm"}


def tiny_config(**overrides):
    # A tiny Llama with all-linear LoRA memorises the text in 60 steps (OPT or q/v only: not
    # reliably).
    settings = {
        "block_length": 16,
        "prefix_length": 8,
        "batch_size": 4,
        "implant_steps": 60,
        "implant_lr": 1e-2,
        "unlearn_steps": 10,
        "unlearn_lr": 1e-2,
    }
    return CopyrightConfig(**{**settings, **overrides})


def tiny_llama(tokenizer):
    return tiny_causal_lm("llama", tokenizer)


@pytest.fixture(scope="module")
def ga_run(tokenizer):
    torch.set_num_threads(1)  # module scope runs before the per-test one_thread fixture
    rows = []
    result = run_copyright(
        tiny_llama(tokenizer),
        tokenizer,
        FORGET,
        RETAIN,
        tiny_config(eval_every=20),
        log=rows.append,
    )
    return result, rows


def test_implant_raises_leakage_and_unlearning_lowers_it(ga_run):
    result, _ = ga_run
    original, implanted, unlearned = (
        result.stages[name] for name in ("original", "implanted", "unlearned")
    )
    assert implanted["rouge_l"] > original["rouge_l"] + 0.5
    assert implanted["verbatim_tokens"] > original["verbatim_tokens"] + 4
    assert implanted["perplexity_forget"] < original["perplexity_forget"]
    assert unlearned["rouge_l"] < implanted["rouge_l"] - 0.5
    assert unlearned["verbatim_tokens"] < implanted["verbatim_tokens"]
    assert unlearned["perplexity_forget"] > implanted["perplexity_forget"]


def test_history_logs_training_and_leakage(ga_run):
    result, rows = ga_run
    assert rows == result.history
    implant = [row for row in rows if row["stage"] == "implant"]
    unlearn = [row for row in rows if row["stage"] == "unlearn"]
    assert len(implant) == 60 and len(unlearn) == 10
    assert "rouge_l" in implant[19] and "rouge_l" not in implant[18]
    assert {"nll", "retain_kl", "loss"} <= implant[0].keys()
    assert {"ga", "retain_nll", "loss"} <= unlearn[0].keys()


def test_implant_retain_options(tokenizer):
    for retain, terms in (("none", {"nll"}), ("nll", {"nll", "retain_nll"})):
        config = tiny_config(implant_steps=2, unlearn_steps=0, implant_retain=retain, max_windows=2)
        implant = [
            row
            for row in run_copyright(
                tiny_llama(tokenizer), tokenizer, FORGET, RETAIN, config
            ).history
            if row["stage"] == "implant"
        ]
        assert terms | {"loss"} == {key for key in implant[0] if "/" not in key} - TRAINER_KEYS


@pytest.mark.parametrize(
    "objective, retain, terms", [("npo", "kl", {"npo", "retain_kl"}), ("ga", "none", {"ga"})]
)
def test_npo_and_retain_options(tokenizer, objective, retain, terms):
    config = tiny_config(
        implant_steps=2, unlearn_steps=2, objective=objective, retain=retain, max_windows=2
    )
    result = run_copyright(tiny_llama(tokenizer), tokenizer, FORGET, RETAIN, config)
    unlearn = [row for row in result.history if row["stage"] == "unlearn"]
    assert terms | {"loss"} == {key for key in unlearn[0] if "/" not in key} - TRAINER_KEYS
    assert set(result.stages) == {"original", "implanted", "unlearned"}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"objective": "wpn"}, "objective must be one of"),
        ({"retain": "mse"}, "retain must be one of"),
        ({"prefix_length": 16}, "prefix_length must lie in"),
        ({"batch_size": 0}, "batch_size must be positive"),
        ({"unlearn_steps": -1}, "steps must be non-negative"),
        ({"implant_retain": "mse"}, "implant_retain must be one of"),
    ],
)
def test_bad_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_text_shorter_than_a_window(tokenizer):
    with pytest.raises(ValueError, match="fewer than one window"):
        run_copyright(
            tiny_llama(tokenizer),
            tokenizer,
            ["Paris is the capital of France."],
            RETAIN,
            tiny_config(),
        )
