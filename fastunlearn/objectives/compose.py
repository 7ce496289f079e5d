"""A training objective as a weighted sum of terms, each reading one part of a PairedBatch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from fastunlearn.models import CausalLMAdapter, ReferenceModel
from fastunlearn.objectives.batch import PairedBatch
from fastunlearn.objectives.kl import RetainKL
from fastunlearn.objectives.likelihood import GradientAscent, ResponseNLL
from fastunlearn.objectives.methods import GAMismatchKLOptions
from fastunlearn.objectives.output import ObjectiveOutput

BATCH_PARTS = ("forget", "retain", "mismatch")


@dataclass(frozen=True)
class Term:
    """``weight * objective(model, batch.<part>)``, logged under ``name``."""

    name: str
    objective: Callable[[CausalLMAdapter, object], ObjectiveOutput]
    weight: float
    part: str

    def __post_init__(self) -> None:
        if self.part not in BATCH_PARTS:
            raise ValueError(
                f"term {self.name!r}: part must be one of {BATCH_PARTS}, got {self.part!r}"
            )


class WeightedSum:
    """loss = sum_i weight_i * term_i.

    Stats: ``loss`` (the total), each term's unweighted value under its name, and each
    term's own stats under ``name/stat``.
    """

    def __init__(self, terms: Sequence[Term]):
        names = [term.name for term in terms]
        if not terms or len(set(names)) != len(names):
            raise ValueError(
                f"a WeightedSum needs at least one term and distinct names, got {names}"
            )
        self.terms = tuple(terms)

    def __call__(self, model: CausalLMAdapter, batch: PairedBatch) -> ObjectiveOutput:
        total: torch.Tensor | float = 0.0
        stats: dict[str, torch.Tensor] = {}
        for term in self.terms:
            part = getattr(batch, term.part)
            if part is None:
                raise ValueError(
                    f"term {term.name!r} reads batch.{term.part}, which this PairedBatch lacks"
                )
            loss, term_stats = term.objective(model, part)
            total = total + term.weight * loss
            stats[term.name] = loss.detach()
            stats.update({f"{term.name}/{key}": value for key, value in term_stats.items()})
        stats["loss"] = total.detach()
        return ObjectiveOutput(total, stats)


def ga_mismatch_kl(
    reference: ReferenceModel,
    ga_weight: float = GAMismatchKLOptions.ga_weight,
    mismatch_weight: float = GAMismatchKLOptions.mismatch_weight,
    kl_weight: float = GAMismatchKLOptions.kl_weight,
    *,
    backend: str | None = None,
) -> WeightedSum:
    """Yao et al. 2023: GA on forget pairs + NLL on mismatched answers + KL on retain data.

    Default weights are theirs (0.5 / 1 / 1).
    """
    return WeightedSum(
        [
            Term("ga", GradientAscent(backend=backend), ga_weight, "forget"),
            Term("mismatch", ResponseNLL(backend=backend), mismatch_weight, "mismatch"),
            Term("kl", RetainKL(reference), kl_weight, "retain"),
        ]
    )
