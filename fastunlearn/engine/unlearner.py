"""Unlearner: the training loop around a configured objective.

    unlearner = Unlearner(UnlearnConfig.load("fastunlearn:configs/wpn_lora.yaml"))
    final_model_folder = unlearner.train()

One readable loop (``train``) runs on plain PyTorch on one device, or on a DeepSpeed
engine (ZeRO 0-3) when train.deepspeed is set or the deepspeed launcher started the
process. Each optimizer step takes gradient_accumulation_steps micro-batches per rank;
checkpoints every train.checkpoint_every steps and at the end resume a run exactly; the
last step writes a Hugging Face model folder (``final/``) that from_pretrained loads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    set_seed,
)

from fastunlearn.engine import checkpoint, distributed, safety
from fastunlearn.engine.backends import DeepSpeedBackend, PlainBackend
from fastunlearn.engine.config import UnlearnConfig
from fastunlearn.engine.data import build_sampler
from fastunlearn.engine.metrics import MetricsLogger
from fastunlearn.engine.objective import ObjectiveModule, build_objective, head_parameters
from fastunlearn.engine.overrides import ConfigError
from fastunlearn.models import (
    CausalLMAdapter,
    ReferenceModel,
    add_lora,
    default_model_location,
    evaluation_mode,
    load_default_model,
    load_model,
    local_model_source,
    lora_config,
)

FINAL_MODEL_DIR = "final"
MODEL_DTYPES = {
    "auto": "auto",
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

FP16_WEIGHTS = (
    "model.dtype=float16 would train fp16 weights, whose AdamW updates underflow (its epsilon "
    "1e-8 is 0 in fp16) and turn to NaN; load float32 with train.precision=fp16, or bfloat16"
)

EvalHook = Callable[["Unlearner", int], Mapping[str, float] | None]


def load_configured_model(config: UnlearnConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model and tokenizer named by config.model (under ZeRO-3, loaded sharded when
    the HF DeepSpeed config is alive)."""
    model_config = config.model
    kwargs = {"dtype": MODEL_DTYPES[model_config.dtype]}
    if model_config.name_or_path == "default":
        return load_default_model(**kwargs)
    return load_model(
        model_config.name_or_path,
        gguf_file=model_config.gguf_file,
        trust_remote_code=model_config.trust_remote_code,
        **kwargs,
    )


def _pretrained_source(config: UnlearnConfig) -> tuple[str, dict]:
    """What from_pretrained reads for config.model: a name or folder, and its options."""
    if config.model.name_or_path == "default":
        directory, gguf_file = default_model_location()
        return str(directory), {"gguf_file": gguf_file}
    return local_model_source(config.model.name_or_path), {
        "gguf_file": config.model.gguf_file,
        "trust_remote_code": config.model.trust_remote_code,
        "local_files_only": True,
    }


def load_configured_tokenizer(config: UnlearnConfig) -> PreTrainedTokenizerBase:
    """The tokenizer of config.model alone: the data is read and checked with it before
    the (slower) model loads."""
    source, options = _pretrained_source(config)
    return AutoTokenizer.from_pretrained(source, **options)


def load_configured_model_config(config: UnlearnConfig) -> PretrainedConfig:
    """The HF config of config.model, without loading weights."""
    source, options = _pretrained_source(config)
    return AutoConfig.from_pretrained(source, **options)


def check_fits_model(
    config: UnlearnConfig, model_config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase
) -> None:
    """Settings the model cannot serve, refused before its weights load."""
    text_config = model_config.get_text_config()
    layers = getattr(text_config, "num_hidden_layers", None)
    layer = getattr(config.objective.options, "layer", None)
    # hidden_states holds the embedding output and one entry per layer: layers + 1 in all.
    if layer is not None and layers is not None and not -(layers + 1) <= layer <= layers:
        raise ConfigError(
            f"objective.layer={layer} is beyond the model's {layers} layers "
            f"(valid: 0..{layers}, or negative from the end)"
        )
    context = getattr(text_config, "max_position_embeddings", None)
    if context is not None and config.data.max_length > context:
        raise ConfigError(
            f"data.max_length={config.data.max_length} is beyond the model's context of "
            f"{context} tokens"
        )
    vocab = getattr(text_config, "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise ConfigError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only {vocab} "
            "rows: token ids past it would index out of range; use the model's own tokenizer"
        )
    if config.model.dtype == "float16" and not config.lora.enabled:
        raise ConfigError(FP16_WEIGHTS)


class Unlearner:
    """Runs ``config`` on ``model`` and ``tokenizer`` (default: loaded as config.model says).

    ``eval_hooks``: callables ``hook(unlearner, step)`` run every train.eval_every steps on
    every rank (under ZeRO-3 the model is sharded, so each rank must run the same
    forward passes); what they return is logged to metrics.jsonl under ``eval/``.

    Attributes: ``model`` (the model being trained: a PeftModel with LoRA), ``tokenizer``,
    ``batches`` (the sampler), ``step`` (optimizer steps done), ``output_dir``,
    ``is_main_process`` (rank 0), ``deepspeed_config`` (as filled in; None without DeepSpeed).
    """

    def __init__(
        self,
        config: UnlearnConfig,
        model: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        eval_hooks: Sequence[EvalHook] = (),
    ):
        if (model is None) != (tokenizer is None):
            raise ValueError(
                "pass both model and tokenizer, or neither (both are then loaded from config.model)"
            )
        self.config, self.eval_hooks, self.step = config, list(eval_hooks), 0
        self.output_dir = Path(config.train.output_dir)
        train = config.train
        set_seed(train.seed)
        rank, world_size, deepspeed_config = 0, 1, None
        if distributed.uses_deepspeed(config):
            # Checked against the run config before anything starts: a contradiction fails fast.
            deepspeed_config = distributed.resolve_deepspeed_config(
                distributed.read_deepspeed_config(config),
                config,
                distributed.launched_world_size(),
                train.deepspeed or "the default DeepSpeed config",
            )
            rank, world_size = distributed.init_process_group()
        if rank == 0:  # before anything loads: a folder the run cannot use fails at once
            safety.check_writable_dir(self.output_dir, f"train.output_dir={self.output_dir}")
            safety.RunLock(self.output_dir).probe()
        zero3 = deepspeed_config is not None and distributed.zero_stage(deepspeed_config) == 3
        if zero3 and config.lora.enabled and config.lora.export == "merged":
            raise ConfigError(
                "lora.export=merged is not available under ZeRO-3 (the base weights are sharded); "
                "use lora.export=adapter and merge afterwards with peft's merge_and_unload"
            )
        model_config = model.config if model is not None else load_configured_model_config(config)
        if deepspeed_config is not None:
            # Before loading: zero.Init shards the weights as they are created, by these sizes.
            distributed.fill_hidden_size_keys(deepspeed_config, model_config.hidden_size)
        # Alive while this Unlearner is: transformers then loads models sharded (zero.Init).
        self._hf_deepspeed_config = self._zero3_loading(deepspeed_config) if zero3 else None
        loaded_here = model is None
        self.tokenizer = tokenizer if tokenizer is not None else load_configured_tokenizer(config)
        check_fits_model(config, model_config, self.tokenizer)
        self.batches = build_sampler(config, self.tokenizer, rank, world_size)
        if model is None:
            model = load_configured_model(config)[0]
        if config.lora.enabled:
            lora = config.lora
            model = add_lora(
                model, lora_config(lora.rank, lora.alpha, lora.dropout, lora.target_modules)
            )
        if any(p.dtype == torch.float16 for p in model.parameters() if p.requires_grad):
            raise ConfigError(FP16_WEIGHTS)
        self.model = model
        if deepspeed_config is None:
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            model.to(device)
        adapter = CausalLMAdapter(model)
        reference = (
            self._reference(adapter, deepspeed_config, zero3, loaded_here)
            if config.objective.needs_reference
            else None
        )
        external = []
        if zero3:
            external = head_parameters(adapter)
            if reference is not None and not reference.shares_weights:
                external += head_parameters(reference.adapter)
        module = ObjectiveModule(model, build_objective(config.objective, reference), external)
        if deepspeed_config is None:
            self.backend = PlainBackend(module, train, device)
        else:
            self.backend = DeepSpeedBackend(module, train, deepspeed_config, rank, world_size)
        self.deepspeed_config = deepspeed_config
        self.is_main_process = self.backend.is_main

    @staticmethod
    def _zero3_loading(deepspeed_config: dict):
        from transformers.integrations import HfDeepSpeedConfig

        return HfDeepSpeedConfig(deepspeed_config)

    def _reference(
        self,
        adapter: CausalLMAdapter,
        deepspeed_config: dict | None,
        zero3: bool,
        loaded_here: bool,
    ) -> ReferenceModel:
        """The model before unlearning: with LoRA the adapters switched off, else a frozen
        copy (under DeepSpeed in the training precision; under ZeRO-3 sharded too)."""
        if adapter.is_peft:
            return ReferenceModel(adapter)
        if zero3 and hasattr(next(adapter.model.parameters()), "ds_id"):
            if not loaded_here:
                raise ValueError(
                    "the model passed in is already sharded (zero.Init), so no frozen copy can be "
                    "taken for the reference; pass it unsharded, or let the Unlearner load it"
                )
            # The original model loaded a second time, sharded like the trained one.
            second_copy = CausalLMAdapter(load_configured_model(self.config)[0])
            reference = ReferenceModel(second_copy, copy_weights=False)
        else:
            reference = ReferenceModel(adapter)
        if deepspeed_config is not None:
            import deepspeed

            inference_config = {
                key: value
                for key, value in deepspeed_config.items()
                if key in ("train_micro_batch_size_per_gpu", "bf16", "fp16")
            }
            zero = deepspeed_config.get("zero_optimization", {})
            # Sharded like the trained model under ZeRO-3 (it has no optimizer to offload);
            # otherwise not sharded: DeepSpeed only casts it to the training precision.
            inference_config["zero_optimization"] = (
                {key: value for key, value in zero.items() if key != "offload_optimizer"}
                if zero3
                else {"stage": 0}
            )
            # Kept: the engine owns the hooks that gather the reference's shards.
            self._reference_engine, *_ = deepspeed.initialize(
                model=reference.adapter.model, config=inference_config
            )
        return reference

    # ----------------------------------------------------------------------------- training

    def train(self, resume: bool | str | Path = False) -> Path:
        """Run to train.max_steps; returns the final model folder.

        ``resume``: True continues from the latest checkpoint in train.output_dir, a path
        from that checkpoint. Without it, an output_dir that already holds checkpoints or a
        final model is refused rather than mixed with a new run; so is one another live run
        holds (a lock for the whole run).
        """
        lock = safety.RunLock(self.output_dir).acquire() if self.is_main_process else None
        try:
            return self._train(resume)
        finally:
            if lock is not None:
                lock.release()

    def _train(self, resume: bool | str | Path) -> Path:
        train = self.config.train
        resume_from = self._checkpoint_to_resume(resume)
        if resume_from is not None:
            self._load_checkpoint(resume_from)
        if self.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        self.backend.barrier()
        self.model.train()  # dropout on, as in fine-tuning (from_pretrained returns eval mode)
        metrics = (
            MetricsLogger(self.output_dir, self.step if resume_from else None)
            if self.is_main_process
            else None
        )
        progress = tqdm(
            total=train.max_steps,
            initial=self.step,
            desc="unlearning",
            disable=not (self.is_main_process and train.progress_bar),
        )
        saved_step = self.step if resume_from else None
        started = time.perf_counter()
        try:
            with _deterministic(train.deterministic):
                while self.step < train.max_steps:
                    stats = self._train_step()
                    self.step += 1
                    # A loss scaler's overflow steps give an infinite norm and are skipped.
                    checked = {
                        name: value
                        for name, value in stats.items()
                        if not (name == "grad_norm" and train.precision == "fp16")
                    }
                    safety.check_finite_stats(self.step, checked, self._last_saved(saved_step))
                    progress.update(1)
                    progress.set_postfix(
                        {
                            name: f"{value:.4g}"
                            for name, value in stats.items()
                            if "/" not in name and name not in ("learning_rate", "grad_norm")
                        }
                    )
                    watched = self.config.objective.method.forget_statistic
                    diverged = (
                        train.stop_forget_nll_above is not None
                        and stats[watched] > train.stop_forget_nll_above
                    )
                    if metrics and (self.step % train.log_every == 0 or diverged):
                        metrics.log(
                            self.step, {**stats, "elapsed_s": time.perf_counter() - started}
                        )
                    if train.eval_every and self.step % train.eval_every == 0:
                        self._evaluate(metrics)
                    if train.checkpoint_every and self.step % train.checkpoint_every == 0:
                        self.save_checkpoint()
                        saved_step = self.step
                    if diverged:
                        progress.write(
                            f"stopping at step {self.step}: forget NLL "
                            f"{stats[watched]:.3f} passed "
                            f"train.stop_forget_nll_above={train.stop_forget_nll_above}"
                        )
                        break
            if saved_step != self.step:
                self.save_checkpoint()
            return self.export()
        finally:
            progress.close()
            if metrics:
                metrics.close()

    @staticmethod
    def _last_saved(saved_step: int | None) -> str:
        return "the start" if saved_step is None else f"the checkpoint of step {saved_step}"

    def _check_finite_weights(self, what: str) -> None:
        """Every rank checks its own (under ZeRO-3: its shard of the) trainable weights; all
        agree before anything is written."""
        local = safety.finite(
            getattr(p, "ds_tensor", p).detach() for p in self.model.parameters() if p.requires_grad
        )
        if self.backend.average(local.reshape(1).to(self.backend.device)).item() < 1.0:
            raise safety.TrainingDivergedError(
                f"step {self.step}: the trained weights are not finite, so {what} was not "
                "written: lower train.learning_rate or set train.max_grad_norm"
            )

    def _train_step(self) -> dict[str, float]:
        """One optimizer step; the stats averaged over its micro-batches and all ranks."""
        totals: dict[str, torch.Tensor] = {}
        accumulation = self.config.train.gradient_accumulation_steps
        for _ in range(accumulation):
            batch = next(self.batches).to(self.backend.device)
            output = self.backend.forward(batch)
            self.backend.accumulate(output.loss)
            for name, value in output.stats.items():
                totals[name] = totals.get(name, 0.0) + value.detach().float()
        learning_rate = self.backend.learning_rate  # the rate this step applies
        grad_norm = self.backend.finish_step()
        names = sorted(totals)
        averaged = self.backend.average(
            torch.stack([totals[name] for name in names]) / accumulation
        ).tolist()
        stats = {**dict(zip(names, averaged, strict=True)), "learning_rate": learning_rate}
        if grad_norm is not None:
            stats["grad_norm"] = grad_norm
        return stats

    def _evaluate(self, metrics: MetricsLogger | None) -> None:
        results: dict[str, float] = {}
        with torch.no_grad(), evaluation_mode(self.model):
            for hook in self.eval_hooks:
                results.update(hook(self, self.step) or {})
        if metrics and results:
            metrics.log(self.step, {f"eval/{name}": value for name, value in results.items()})

    # -------------------------------------------------------------------------- checkpoints

    def _checkpoint_to_resume(self, resume: bool | str | Path) -> Path | None:
        existing = checkpoint.latest_checkpoint(self.output_dir)
        if resume is False:
            if existing is not None:
                raise FileExistsError(
                    f"{self.output_dir} already holds checkpoints ({existing.name}); pass "
                    "resume=True (--resume) to continue that run, or choose another "
                    "train.output_dir"
                )
            if (self.output_dir / FINAL_MODEL_DIR).exists():
                raise FileExistsError(
                    f"{self.output_dir / FINAL_MODEL_DIR} holds the model of a finished run; "
                    "choose another train.output_dir, or remove it to train again there"
                )
            return None
        if resume is True:
            if existing is None:
                raise FileNotFoundError(f"nothing to resume: {self.output_dir} holds no checkpoint")
            return existing
        return Path(resume)

    def _load_checkpoint(self, folder: Path) -> None:
        state = checkpoint.read_state(folder, self.model)
        config = self.config.to_dict()
        checkpoint.check_resumable(state, config, checkpoint.input_digests(config), folder)
        self.backend.load(folder)
        self.batches.load_state_dict(state.sampler)
        checkpoint.load_rng(folder, self.backend.rank)
        self.step = state.step

    def save_checkpoint(self) -> Path:
        """Write checkpoint-{step} atomically: every rank writes into the staging folder,
        then rank 0 renames it into place once all have finished."""
        final = checkpoint.checkpoint_path(self.output_dir, self.step)
        staging = checkpoint.staging_path(final)
        self._check_finite_weights(final.name)
        with safety.reporting_full_disk(final.name, staging):
            if self.is_main_process:
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(parents=True)
            self.backend.barrier()
            self.backend.save(staging)
            checkpoint.save_rng(staging, self.backend.rank)
            if self.is_main_process:
                config = self.config.to_dict()
                state = checkpoint.TrainerState(
                    self.step,
                    self.batches.state_dict(),
                    checkpoint.model_fingerprint(self.model),
                    config,
                    checkpoint.input_digests(config),
                )
                checkpoint.write_state(staging, state)
            self.backend.barrier()
            if self.is_main_process:
                checkpoint.publish(staging, final, self.config.train.keep_checkpoints)
        self.backend.barrier()
        return final

    # ------------------------------------------------------------------------------- export

    def export(self) -> Path:
        """Write ``output_dir/final``: a model folder from_pretrained loads (LoRA merged into
        the weights, or the adapter alone, as lora.export says) and the tokenizer.

        Merging replaces ``self.model`` by the merged model."""
        final = self.output_dir / FINAL_MODEL_DIR
        staging = checkpoint.staging_path(final)
        self._check_finite_weights(str(final))
        state_dict = self.backend.full_state_dict()
        if self.is_main_process:
            with safety.reporting_full_disk(str(final), staging):
                shutil.rmtree(staging, ignore_errors=True)
                model = self.model
                if self.config.lora.enabled and self.config.lora.export == "merged":
                    model = self.model = self.model.merge_and_unload()
                model.save_pretrained(staging, state_dict=state_dict)
                self.tokenizer.save_pretrained(staging)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
        self.backend.barrier()
        return final


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """torch.use_deterministic_algorithms for the loop only (warning where an op has no
    deterministic version), restoring the previous setting after."""
    if not enabled:
        yield
        return
    previous, previous_warn = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
