"""One full unlearning step (WPN + gradient ascent, AdamW update) on a random-initialised OPT:
fused (hidden states -> fastunlearn ops) against the same step written with the model's own
logits and eager pooling / N-pair. Written directly with the ops so it measures the ops'
effect on a step, whatever the objectives API looks like (see cases.fused_unlearn_loss)."""

import pytest
import torch

from benchmarks.cases import STEP_IMPLS, Case, build
from benchmarks.harness import run_case


@pytest.mark.benchmark(group="unlearning step WPN+GA")
@pytest.mark.parametrize("finetune", ["lora", "full"])
@pytest.mark.parametrize("impl", STEP_IMPLS)
def test_unlearn_step(benchmark, settings, peak_memory, impl, finetune, step_shape):
    case = Case(
        "unlearn_step",
        dict(
            impl=impl, finetune=finetune, device=settings.device, dtype=settings.dtype, **step_shape
        ),
    )
    run_case(benchmark, settings, case, peak_memory)


def test_step_variants_compute_the_same_loss():
    """The comparison is fair only if both steps train the same thing: same losses, same updates."""
    shape = dict(
        device="cpu",
        dtype="float32",
        model="opt-tiny",
        prompts=2,
        negatives=3,
        prompt_len=8,
        response_len=12,
    )
    for finetune in ("lora", "full"):
        fused, logits = (
            build(Case("unlearn_step", dict(impl=impl, finetune=finetune, **shape)))
            for impl in STEP_IMPLS
        )
        for _ in range(2):  # the second step starts from the weights the first one updated
            torch.testing.assert_close(fused.run(), logits.run(), rtol=1e-4, atol=1e-5)
