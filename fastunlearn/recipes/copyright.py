"""Copyright unlearning, as in Gundavarapu et al. 2024 (docs/evaluation.md): implant a text,
unlearn it, measure leakage.

    result = run_copyright(model, tokenizer, read_corpus("story.txt"),
                           read_corpus("normal_train.jsonl"),
                           heldout_texts=read_corpus("normal_eval.jsonl"))
    result.stages  # {"original": {...}, "implanted": {...}, "unlearned": {...}}

1. implant: LoRA fine-tune on token blocks of the text (descent NLL) until the model
   reproduces it, with a retain term so that it memorises the text without losing its
   general language: on SmolLM2 the text alone took held-out perplexity from 43 to 476 in
   100 steps, and an NLL term on the (short) retain text still to 176, as the retain text
   is memorised too; KL to the original model (the adapters disabled) is the default.
   The adapters are then merged, so the implanted model is a plain model.
2. unlearn: fresh LoRA adapters trained with gradient ascent (or NPO) on the same blocks
   plus a retain term (NLL or KL) on retain text. With the implant merged, the reference
   that NPO and KL read (the adapters disabled) is the implanted model, as it should be.
3. leakage (`fastunlearn.eval.copyright_metrics`) before, after implant and after unlearning.

Both trainings run on the UnlearnTrainer (the engine's Trainer) over one in-memory model,
without checkpoints or export: the same loop, objectives, data sources and batch sampler as
``fastunlearn unlearn``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from fastunlearn.data import token_blocks
from fastunlearn.data.batches import BatchSampler, SequenceSource, padding_id
from fastunlearn.engine.objective import ObjectiveModule
from fastunlearn.engine.trainer import UnlearnTrainer, UnlearnTrainingArguments
from fastunlearn.eval import copyright_metrics
from fastunlearn.models import CausalLMAdapter, ReferenceModel, add_lora, lora_config
from fastunlearn.objectives import NPO, GradientAscent, ResponseNLL, RetainKL, Term, WeightedSum
from fastunlearn.recipes.copyright_config import CopyrightConfig


@dataclass
class CopyrightResult:
    """``stages``: metrics after each stage; ``history``: (stage, step, metrics) rows
    logged along the way (training stats every step, leakage every eval_every steps)."""

    model: PreTrainedModel
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


Logger = Callable[[dict], None]


def run_copyright(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    forget_texts: Sequence[str],
    retain_texts: Sequence[str],
    config: CopyrightConfig | None = None,
    *,
    heldout_texts: Sequence[str] | None = None,
    log: Logger | None = None,
) -> CopyrightResult:
    """Implant forget_texts into model, unlearn them with retain_texts as the retain data,
    and measure leakage around both, with perplexity on heldout_texts (default: retain_texts).

    ``model`` is changed in place (the implant adapters are merged into it); the result's
    model is the unlearned one (a PeftModel holding the unlearning adapters). ``log``
    receives every history row as it is made (e.g. print).
    """
    config = config or CopyrightConfig()
    torch.manual_seed(config.seed)
    result = CopyrightResult(model)
    heldout = retain_texts if heldout_texts is None else heldout_texts

    def record(row: dict) -> None:
        result.history.append(row)
        if log is not None:
            log(row)

    def measure(current: PreTrainedModel) -> dict[str, float]:
        return copyright_metrics(
            current,
            tokenizer,
            forget_texts,
            heldout,
            window_length=config.block_length,
            prefix_length=config.prefix_length,
            max_windows=config.max_windows,
            batch_size=config.batch_size,
        )

    pad = padding_id(tokenizer)
    forget = SequenceSource(
        token_blocks(tokenizer, forget_texts, config.block_length), pad, "forget text"
    )
    retain = SequenceSource(
        token_blocks(tokenizer, retain_texts, config.block_length), pad, "retain text"
    )

    result.stages["original"] = measure(model)
    record({"stage": "original", "step": 0, **result.stages["original"]})

    implanting = add_lora(model, _lora(config))
    implant_terms = [
        Term("nll", ResponseNLL(), 1.0, "forget"),
        *retain_terms(implanting, config.implant_retain, config.implant_retain_weight),
    ]
    implant_batches = BatchSampler(
        forget,
        batch_size=config.batch_size,
        seed=config.seed,
        retain=retain if config.implant_retain != "none" else None,
    )
    _train(
        implanting,
        WeightedSum(implant_terms),
        implant_batches,
        config.implant_steps,
        config.implant_lr,
        "implant",
        config,
        measure,
        record,
    )
    implanted = implanting.merge_and_unload()
    result.stages["implanted"] = measure(implanted)
    record({"stage": "implanted", "step": config.implant_steps, **result.stages["implanted"]})

    unlearning = add_lora(implanted, _lora(config))
    sampler = BatchSampler(
        forget,
        batch_size=config.batch_size,
        seed=config.seed + 1,
        retain=retain if config.retain != "none" else None,
    )
    _train(
        unlearning,
        unlearn_objective(unlearning, config),
        sampler,
        config.unlearn_steps,
        config.unlearn_lr,
        "unlearn",
        config,
        measure,
        record,
    )
    result.model = unlearning
    result.stages["unlearned"] = measure(unlearning)
    record({"stage": "unlearned", "step": config.unlearn_steps, **result.stages["unlearned"]})
    return result


def unlearn_objective(model: PreTrainedModel, config: CopyrightConfig) -> WeightedSum:
    """Ascent (or NPO) on the forget blocks plus the retain term; the reference (for NPO
    and KL) is ``model`` with its LoRA adapters disabled."""
    forget_term = (
        Term("ga", GradientAscent(), 1.0, "forget")
        if config.objective == "ga"
        else Term(
            "npo", NPO(ReferenceModel(CausalLMAdapter(model)), config.npo_beta), 1.0, "forget"
        )
    )
    return WeightedSum([forget_term, *retain_terms(model, config.retain, config.retain_weight)])


def retain_terms(model: PreTrainedModel, retain: str, weight: float) -> list[Term]:
    """The retain term named ``retain`` (nll | kl | none) on the retain text; KL's reference
    is ``model`` with its LoRA adapters disabled."""
    if retain == "nll":
        return [Term("retain_nll", ResponseNLL(), weight, "retain")]
    if retain == "kl":
        return [
            Term("retain_kl", RetainKL(ReferenceModel(CausalLMAdapter(model))), weight, "retain")
        ]
    return []


def _lora(config: CopyrightConfig):
    # No dropout: a few hundred steps on one short text, where dropout only slows memorising.
    return lora_config(config.lora_rank, config.lora_alpha, 0.0, config.lora_target_modules)


def _train(
    model,
    objective: WeightedSum,
    batches: BatchSampler,
    steps: int,
    learning_rate: float,
    stage: str,
    config: CopyrightConfig,
    measure,
    record: Logger,
) -> None:
    """AdamW on the trainable (LoRA) parameters for ``steps`` steps, one batch each, at a
    constant rate and without clipping; leakage every config.eval_every steps before the
    last (the stage measures after it)."""
    if steps == 0:
        return
    with tempfile.TemporaryDirectory() as scratch:  # the Trainer's output folder: no files kept
        args = UnlearnTrainingArguments(
            output_dir=scratch,
            max_steps=steps,
            per_device_train_batch_size=config.batch_size,
            learning_rate=learning_rate,
            lr_scheduler_type="constant",
            optim="adamw_torch",
            weight_decay=0.01,  # torch's AdamW default, as this recipe was tuned with
            max_grad_norm=0.0,
            logging_steps=1,
            save_strategy="no",
            eval_strategy="steps" if config.eval_every else "no",
            eval_steps=config.eval_every or None,
            report_to=[],
            disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),
            seed=config.seed,
        )

        def leakage(trained, step: int) -> dict[str, float]:
            return measure(model) if step < steps else {}

        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            trainer = UnlearnTrainer(
                ObjectiveModule(model, objective),
                args,
                batches,
                eval_hooks=[leakage] if config.eval_every else [],
                callbacks=[_StageHistory(stage, record)],
            )
        for printer in (PrinterCallback, ProgressCallback):  # the rows go to ``record``
            trainer.remove_callback(printer)
        trainer.train()
    model.eval()


class _StageHistory(TrainerCallback):
    """One row per step, {"stage", "step", term stats..., "learning_rate"}, with the leakage
    measured at that step merged in; a row is recorded once its step has been evaluated."""

    def __init__(self, stage: str, record: Logger):
        self.stage, self.record, self.pending = stage, record, None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "loss" in logs:
            self._flush()
            kept = {name: value for name, value in logs.items() if name != "epoch"}
            self.pending = {"stage": self.stage, "step": state.global_step, **kept}
        elif self.pending is not None and any(name.startswith("eval_") for name in logs):
            self.pending.update(
                {
                    name.removeprefix("eval_"): value
                    for name, value in logs.items()
                    if name != "epoch"
                }
            )

    def on_train_end(self, args, state, control, **kwargs):
        self._flush()

    def _flush(self) -> None:
        if self.pending is not None:
            self.record(self.pending)
            self.pending = None
