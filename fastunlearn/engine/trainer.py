"""UnlearnTrainer: a ``transformers.Trainer`` whose model is the unlearning objective.

    trainer = UnlearnTrainer(ObjectiveModule(model, objective), args, batches)
    trainer.train()                      # or trainer.train(resume_from_checkpoint=True)

The Trainer runs the loop: AdamW and the LR schedule, accumulation, clipping, mixed
precision, DeepSpeed (ZeRO 0-3, offload) and DDP through accelerate, and ``report_to``.
This subclass adds what an unlearning run needs on top of it:

- batches come from a seeded ``BatchSampler`` (one stream split over ranks), whose position
  every checkpoint records, so a resumed run sees the batches an uninterrupted one would;
- each objective term is averaged over micro-batches and ranks every step and logged beside
  the loss; a loss, term or gradient norm that stops being finite stops the run
  (``TrainingDivergedError``), and the gradient-ascent term can stop it at a bound;
- checkpoints are written under a staging name and renamed into place once complete, after
  every rank has checked its trained weights are finite; they hold the trainable weights
  (safetensors) or DeepSpeed's state, and every file is read back as data, never as code;
- resuming checks that the checkpoint was written for this model (a fingerprint of the
  trainable parameters), this run config and these data files;
- ``evaluate()`` runs the eval hooks; every log also goes to ``output_dir/metrics.jsonl``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from fastunlearn.data.batches import BatchSampler
from fastunlearn.engine import checkpoint, safety
from fastunlearn.engine.objective import ObjectiveModule

METRICS_FILE = "metrics.jsonl"
TRAINER_STATE_FILE = "trainer_state.json"

# hook(model, step): the model being trained (a PeftModel with LoRA), the optimizer steps done.
EvalHook = Callable[[torch.nn.Module, int], Mapping[str, float] | None]


@dataclass
class UnlearnTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus ``stop_forget_nll_above``: gradient ascent stops (and saves)
    once the forget NLL passes this bound, as the model has started to diverge."""

    stop_forget_nll_above: float | None = field(
        default=None,
        metadata={"help": "stop once the forget NLL of the gradient-ascent term passes this"},
    )


class UnlearnTrainer(Trainer):
    """``model``: the ObjectiveModule (its forward runs the whole objective, inside the module
    DeepSpeed or DDP wraps). ``batches``: the sampler of this rank.
    ``forget_statistic``: the stat ``stop_forget_nll_above`` watches (the method's).
    ``run_config``: the run's config as a dict, recorded in each checkpoint; a resumed run
    must match it but for checkpoint.MAY_CHANGE_ON_RESUME. ``eval_hooks``: callables
    ``hook(model, step)`` returning metrics, run in eval mode without gradients on every rank
    by ``evaluate()`` (under ZeRO-3 every rank must run the same forward passes).
    """

    def __init__(
        self,
        model: ObjectiveModule,
        args: UnlearnTrainingArguments,
        batches: BatchSampler,
        *,
        processing_class=None,
        forget_statistic: str | None = None,
        run_config: dict | None = None,
        eval_hooks: Sequence[EvalHook] = (),
        callbacks: Sequence[TrainerCallback] = (),
    ):
        self.batches, self.forget_statistic = batches, forget_statistic
        self.run_config, self.eval_hooks = run_config or {}, list(eval_hooks)
        self._step_totals: dict[str, torch.Tensor] = {}  # this step's micro-batches, summed
        self._log_totals: dict[str, float] = {}  # the steps since the last log, summed
        self._log_steps, self._grad_norm = 0, None
        self._saved_step: int | None = None  # the last checkpoint's step, for error messages
        # The sampler resumes from the position a checkpoint records, not by skipping batches.
        args.ignore_data_skip = True
        super().__init__(
            model=model,
            args=args,
            processing_class=processing_class,
            # The Trainer asks for an eval dataset before it evaluates: the hooks are ours.
            eval_dataset=self.eval_hooks or None,
            callbacks=[*callbacks, _StepEnd(self), MetricsFile(args.output_dir)],
        )

    # ------------------------------------------------------------------------------ batches

    def get_train_dataloader(self) -> BatchSampler:
        return self.batches

    def _prepare_inputs(self, inputs):
        return inputs.to(self.args.device)

    def _get_num_items_in_batch(self, batch_samples, device) -> None:
        """None: each objective term normalises itself per micro-batch."""
        return None

    def floating_point_ops(self, inputs) -> int:
        """0: an objective runs several forwards of different sizes; no FLOP estimate."""
        return 0

    # --------------------------------------------------------------------------------- step

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        output = model(inputs)
        for name, value in output.stats.items():
            self._step_totals[name] = self._step_totals.get(name, 0.0) + value.detach().float()
        return (output.loss, output) if return_outputs else output.loss

    def _get_grad_norm(self, model, grad_norm=None):
        self._grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        return self._grad_norm

    def _end_step(self, control) -> None:
        """After each optimizer step: this step's stats over micro-batches and ranks, checked
        finite; the forget-NLL bound."""
        names = sorted(self._step_totals)
        totals = torch.stack([self._step_totals[name] for name in names]).to(self.args.device)
        accumulation = self.args.gradient_accumulation_steps
        averaged = self.accelerator.reduce(totals / accumulation, reduction="mean").tolist()
        stats = dict(zip(names, averaged, strict=True))
        self._step_totals = {}
        checked = dict(stats)
        # A loss scaler's overflow steps give an infinite norm and are skipped, not diverged.
        if self._grad_norm is not None and not self.args.fp16:
            checked["grad_norm"] = float(self._grad_norm)
        safety.check_finite_stats(self.state.global_step, checked, self._last_saved())
        for name, value in stats.items():
            self._log_totals[name] = self._log_totals.get(name, 0.0) + value
        self._log_steps += 1
        bound, watched = self.args.stop_forget_nll_above, self.forget_statistic
        if bound is not None and watched is not None and stats[watched] > bound:
            if self.is_world_process_zero():
                print(
                    f"stopping at step {self.state.global_step}: forget NLL "
                    f"{stats[watched]:.3f} passed stop_forget_nll_above={bound}"
                )
            control.should_training_stop = control.should_log = control.should_save = True

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Training logs carry each term, averaged over the steps since the last log."""
        if "loss" in logs and self._log_steps:
            logs.update({name: v / self._log_steps for name, v in self._log_totals.items()})
            self._log_totals, self._log_steps = {}, 0
        super().log(logs, start_time)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """The eval hooks' metrics, each named ``{metric_key_prefix}_{name}``."""
        from fastunlearn.models import evaluation_mode

        metrics: dict[str, float] = {}
        with torch.no_grad(), evaluation_mode(self.model):
            for hook in self.eval_hooks:
                metrics.update(hook(self.model.model, self.state.global_step) or {})
        metrics = {f"{metric_key_prefix}_{name}": value for name, value in metrics.items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(
            self.args, self.state, self.control, metrics
        )
        return metrics

    # -------------------------------------------------------------------------- checkpoints

    def train(self, resume_from_checkpoint: bool | str | None = None, **kwargs):
        """As Trainer.train, after checking that a checkpoint to resume fits this run (model,
        config, data files) and restoring the sampler's position from it. Without a
        checkpoint to resume, an output_dir that holds checkpoints is refused rather than
        mixed into."""
        folder = self._checkpoint_to_resume(resume_from_checkpoint)
        if folder is not None:
            state = checkpoint.read_state(folder, self.model.model)
            digests = checkpoint.input_digests(self.run_config)
            checkpoint.check_resumable(state, self.run_config, digests, folder, self.args.max_steps)
            self.batches.load_state_dict(state.sampler)
            self._saved_step = state.step
        loads_as_data = _deepspeed_loads_as_data() if self.is_deepspeed_enabled else None
        with loads_as_data or contextlib.nullcontext():
            return super().train(
                resume_from_checkpoint=None if folder is None else str(folder), **kwargs
            )

    def _checkpoint_to_resume(self, resume: bool | str | None) -> Path | None:
        existing = checkpoint.latest_checkpoint(self.args.output_dir)
        if not resume:
            if existing is not None:
                raise FileExistsError(
                    f"{self.args.output_dir} already holds checkpoints ({existing.name}); "
                    "resume to continue that run (--resume), or choose another output folder"
                )
            return None
        if resume is True:
            if existing is None:
                raise FileNotFoundError(
                    f"nothing to resume: {self.args.output_dir} holds no checkpoint"
                )
            return existing
        return Path(resume)

    def _last_saved(self) -> str:
        saved = self._saved_step
        return "the start" if saved is None else f"the checkpoint of step {saved}"

    def _save_checkpoint(self, model, trial) -> None:
        """checkpoint-{step}, written into a staging folder by every rank and renamed into
        place by the main process once all have finished."""
        final = checkpoint.checkpoint_path(self.args.output_dir, self.state.global_step)
        staging = checkpoint.staging_path(final)
        self.check_finite_weights(final.name)
        main = self.args.should_save
        self.store_flos()
        with safety.reporting_full_disk(final.name, staging):
            if main:
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(parents=True)
            self.accelerator.wait_for_everyone()
            if not self.is_deepspeed_enabled and main:  # DeepSpeed saves its weights itself
                checkpoint.save_trainable(staging, self.model.model)
            self._save_optimizer_and_scheduler(str(staging))
            self._save_scaler(str(staging))
            self._save_rng_state(str(staging))
            if main:
                self.state.stateful_callbacks["TrainerControl"] = self.control.state()
                self.state.save_to_json(str(staging / TRAINER_STATE_FILE))
                record = checkpoint.RunState(
                    self.state.global_step,
                    self.batches.state_dict(),
                    checkpoint.model_fingerprint(self.model.model),
                    self.run_config,
                    checkpoint.input_digests(self.run_config),
                )
                checkpoint.write_state(staging, record)
            self.accelerator.wait_for_everyone()
            if main:
                checkpoint.publish(staging, final, self.args.save_total_limit or 0)
        self.accelerator.wait_for_everyone()
        self._saved_step = self.state.global_step

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        checkpoint.load_trainable(Path(resume_from_checkpoint), self.model.model)

    def check_finite_weights(self, what: str) -> None:
        """Every rank checks its own (under ZeRO-3: its shard of the) trained weights; all
        agree before anything is written."""
        local = safety.finite(
            getattr(p, "ds_tensor", p).detach() for p in self.model.parameters() if p.requires_grad
        )
        flag = self.accelerator.reduce(local.reshape(1).to(self.args.device), reduction="mean")
        if flag.item() < 1.0:
            raise safety.TrainingDivergedError(
                f"step {self.state.global_step}: the trained weights are not finite, so {what} "
                "was not written: lower the learning rate or set max_grad_norm"
            )

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Under ZeRO-3, the trained model gathered layer by layer (on the main process; {}
        elsewhere); None when every process holds the whole model already. A collective."""
        if not (self.is_deepspeed_enabled and self.model_wrapped.zero_optimization_stage() == 3):
            return None
        gathered = self.model_wrapped._zero3_consolidated_16bit_state_dict()  # as accelerate
        prefix = "model."  # the ObjectiveModule's attribute holding the model
        return {name.removeprefix(prefix): tensor for name, tensor in (gathered or {}).items()}


class _StepEnd(TrainerCallback):
    """Runs the trainer's end-of-step checks after the Trainer's own flow decisions."""

    def __init__(self, trainer: UnlearnTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._end_step(control)
        return control


class MetricsFile(TrainerCallback):
    """Every log as one JSON line ``{"step": s, name: value, ...}`` in ``metrics.jsonl``.
    A run that resumes first drops the rows an interrupted run logged after its checkpoint,
    so the file reads as one uninterrupted run."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / METRICS_FILE

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.path.is_file():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= state.global_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            row = {"step": state.global_step, **logs}
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")


@contextlib.contextmanager
def _deepspeed_loads_as_data() -> Iterator[None]:
    """DeepSpeed unpickles its checkpoint files with weights_only=False, which can run code
    stored in them; while this is active it reads them as data, allowing only DeepSpeed's
    own plain record types."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    def load(engine, path: str, map_location=None):
        with torch.serialization.safe_globals(
            [ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address]
        ):
            return torch.load(path, map_location=map_location, weights_only=True)

    unsafe = TorchCheckpointEngine.load
    TorchCheckpointEngine.load = load
    try:
        yield
    finally:
        TorchCheckpointEngine.load = unsafe
