"""Unlearning objectives built from the fused ops and the model adapter (docs/objectives.md).

Each objective is called as ``objective(model_adapter, batch)`` and returns an
ObjectiveOutput(loss, stats). ``backend=`` is passed to the ops ("torch" forces the
PyTorch path, e.g. to compare against the fused kernels). ``methods.METHODS`` holds one
entry per unlearning method (options, builder, data, needs). Names load on first use, so a
config can read the methods without torch.
"""

from fastunlearn._lazy import lazy_exports

_EXPORTS = {
    "ContrastiveBatch": "batch",
    "PairedBatch": "batch",
    "SequenceBatch": "batch",
    "Term": "compose",
    "WeightedSum": "compose",
    "ga_mismatch_kl": "compose",
    "RetainKL": "kl",
    "Hold": "rr",
    "GradientAscent": "likelihood",
    "ResponseNLL": "likelihood",
    "response_logprob": "likelihood",
    "METHODS": "methods",
    "Method": "methods",
    "NPO": "npo",
    "ObjectiveOutput": "output",
    "Reroute": "rr",
    "WPN": "wpn",
}
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
__all__ = sorted(_EXPORTS)
