"""Unlearning objectives built from the fused ops and the model adapter (docs/objectives.md).

Each objective is called as ``objective(model_adapter, batch)`` and returns an
ObjectiveOutput(loss, stats). ``backend=`` is passed to the ops ("torch" forces the
PyTorch path, e.g. to compare against the fused kernels).
"""

from fastunlearn.objectives.batch import ContrastiveBatch, PairedBatch, SequenceBatch
from fastunlearn.objectives.compose import Term, WeightedSum, ga_mismatch_kl
from fastunlearn.objectives.kl import RetainKL
from fastunlearn.objectives.likelihood import GradientAscent, ResponseNLL, response_logprob
from fastunlearn.objectives.npo import NPO
from fastunlearn.objectives.output import ObjectiveOutput
from fastunlearn.objectives.wpn import WPN

__all__ = [
    "NPO",
    "WPN",
    "ContrastiveBatch",
    "GradientAscent",
    "ObjectiveOutput",
    "PairedBatch",
    "ResponseNLL",
    "RetainKL",
    "SequenceBatch",
    "Term",
    "WeightedSum",
    "ga_mismatch_kl",
    "response_logprob",
]
