"""The unlearning methods, one entry each: the options a method takes (their defaults live
here and nowhere else), how its terms are built, the data it trains on and what it needs
(docs/objectives.md). The engine reads a method only through its entry, so a new method is a
new entry here plus its objective class.

Light on purpose: reading a config (and the command line's --help) imports this module, so
the objective classes are imported by the builders, when a run builds its terms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from fastunlearn.models import ReferenceModel
    from fastunlearn.objectives.compose import Term


@dataclass(frozen=True)
class WPNOptions:
    """Weighted positional N-pair: ``temperature`` of the N-pair softmax; ``similarity``
    cosine | dot; ``layer`` pooled (None: the head's input); ``candidate_span`` response |
    sequence; the refusal likelihood term's weight (``positive_nll_weight``) and the N-pair
    term's (``npair_weight``); in that likelihood term the first ``opening_tokens`` tokens
    of each positive weigh ``opening_weight`` times the rest; ``negative_unlikelihood_weight``
    weighs an unlikelihood term on the first ``opening_tokens`` tokens of each negative."""

    temperature: float = 0.1
    similarity: str = "cosine"
    layer: int | None = None
    candidate_span: str = "response"
    positive_nll_weight: float = 0.0
    npair_weight: float = 1.0
    opening_tokens: int = 0
    opening_weight: float = 1.0
    negative_unlikelihood_weight: float = 0.0

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.negative_unlikelihood_weight and not self.opening_tokens:
            raise ValueError(
                "negative_unlikelihood_weight acts on the first opening_tokens tokens of each "
                "negative: set opening_tokens too"
            )
        if not self.negative_unlikelihood_weight >= 0:
            weight = self.negative_unlikelihood_weight
            raise ValueError(f"negative_unlikelihood_weight must be >= 0, got {weight}")
        if self.opening_tokens < 0 or not self.opening_weight > 0:
            raise ValueError(
                "opening_tokens must be >= 0 and opening_weight positive, got "
                f"{self.opening_tokens} and {self.opening_weight}"
            )


@dataclass(frozen=True)
class GAOptions:
    """Gradient ascent on the forget responses: no options."""


@dataclass(frozen=True)
class NPOOptions:
    """Negative preference optimization: ``beta``, how fast the push fades."""

    beta: float = 0.1

    def __post_init__(self):
        if not self.beta > 0:
            raise ValueError(f"beta must be positive, got {self.beta}")


@dataclass(frozen=True)
class GAMismatchKLOptions:
    """Yao et al.'s weights of the ascent, mismatch and KL terms (theirs: 0.5 / 1 / 1)."""

    ga_weight: float = 0.5
    mismatch_weight: float = 1.0
    kl_weight: float = 1.0


@dataclass(frozen=True)
class RROptions:
    """Representation rerouting (circuit breakers): ``layers`` compared with the reference
    (indices into the hidden-state tuple, 0 = embeddings; the default suits a 30-layer model
    such as SmolLM2-135M), the weights of the rerouting term on forget responses
    (``reroute_weight``) and of the holding term on retain text (``hold_weight``)."""

    layers: tuple[int, ...] = (10, 20)
    reroute_weight: float = 1.0
    hold_weight: float = 1.0

    def __post_init__(self):
        # A config hands over a list: a tuple keeps the frozen options hashable and comparable.
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise ValueError("layers must name at least one layer")
        for name in ("reroute_weight", "hold_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.reroute_weight == 0 and self.hold_weight == 0:
            raise ValueError("reroute_weight and hold_weight are both 0: rr would train nothing")


Builder = Callable[..., list["Term"]]  # (options, reference or None, backend) -> terms


def _wpn(options: WPNOptions, reference: ReferenceModel | None, backend: str | None):
    from fastunlearn.objectives.compose import Term
    from fastunlearn.objectives.wpn import WPN

    return [Term("wpn", WPN(**asdict(options), backend=backend), 1.0, "forget")]


def _ga(options: GAOptions, reference: ReferenceModel | None, backend: str | None):
    from fastunlearn.objectives.compose import Term
    from fastunlearn.objectives.likelihood import GradientAscent

    return [Term("ga", GradientAscent(backend=backend), 1.0, "forget")]


def _npo(options: NPOOptions, reference: ReferenceModel | None, backend: str | None):
    from fastunlearn.objectives.compose import Term
    from fastunlearn.objectives.npo import NPO

    return [Term("npo", NPO(reference, options.beta, backend=backend), 1.0, "forget")]


def _ga_mismatch_kl(
    options: GAMismatchKLOptions, reference: ReferenceModel | None, backend: str | None
):
    from fastunlearn.objectives.compose import ga_mismatch_kl

    return list(ga_mismatch_kl(reference, **asdict(options), backend=backend).terms)


def _rr(options: RROptions, reference: ReferenceModel | None, backend: str | None):
    from fastunlearn.objectives.compose import Term
    from fastunlearn.objectives.rr import Hold, Reroute

    return [
        Term("reroute", Reroute(reference, options.layers), options.reroute_weight, "forget"),
        Term("hold", Hold(reference, options.layers), options.hold_weight, "retain"),
    ]


@dataclass(frozen=True)
class Method:
    """``data``: "contrastive" trains on prompts with a harmless positive and harmful
    negatives each (WPN), "sequences" on forget (prompt, response) pairs or a text corpus.
    ``retain_data`` / ``mismatch_data``: its terms read retain text / normal answers paired
    with the forget prompts. ``forget_statistic``: the logged statistic that rises as the
    forget data is unlearned (train.stop_forget_nll_above watches it); None if none does."""

    options: type
    build: Builder
    data: Literal["contrastive", "sequences"]
    needs_reference: bool = False
    retain_data: bool = False
    mismatch_data: bool = False
    forget_statistic: str | None = None


METHODS: dict[str, Method] = {
    "wpn": Method(WPNOptions, _wpn, "contrastive"),
    "ga": Method(GAOptions, _ga, "sequences", forget_statistic="ga/nll"),
    "ga_mismatch_kl": Method(
        GAMismatchKLOptions,
        _ga_mismatch_kl,
        "sequences",
        needs_reference=True,
        retain_data=True,
        mismatch_data=True,
        forget_statistic="ga/nll",
    ),
    "npo": Method(NPOOptions, _npo, "sequences", needs_reference=True),
    "rr": Method(RROptions, _rr, "sequences", needs_reference=True, retain_data=True),
}
