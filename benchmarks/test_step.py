"""One full unlearning step (WPN + gradient ascent, AdamW update) on a random-initialised OPT:
fused (hidden states -> fastunlearn ops) against the same step written with the model's own
logits and eager pooling / N-pair. Written directly with the ops so it measures the ops'
effect on a step, whatever the objectives API looks like (see cases.fused_unlearn_loss).
tests/benchmarks/test_cases.py checks that both variants train the same thing."""

import pytest

from benchmarks.cases import STEP_IMPLS, Case
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
