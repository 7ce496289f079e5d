"""The benchmark workloads compare like with like (run in CI with the tests: pytest's
--benchmark-only skips any check that lives in benchmarks/)."""

import torch

from benchmarks.cases import STEP_IMPLS, Case, build


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
