"""Unlearner: one run config -> the model, data and objective -> an UnlearnTrainer.

    unlearner = Unlearner(UnlearnConfig.load("fastunlearn:configs/wpn_lora.yaml"))
    final_model_folder = unlearner.train()

Everything the config can get wrong is checked before the model loads. The UnlearnTrainer
(a transformers.Trainer) runs the steps on one device, under DDP (torchrun, accelerate
launch) or under DeepSpeed (ZeRO 0-3) when train.deepspeed names a config; checkpoints
every train.save_steps steps and at the end resume a run exactly; the end writes a
Hugging Face model folder (``final/``) that from_pretrained loads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    set_seed,
)

from fastunlearn.engine import checkpoint, distributed, safety
from fastunlearn.engine.config import UnlearnConfig
from fastunlearn.engine.data import build_sampler
from fastunlearn.engine.objective import ObjectiveModule, build_objective, head_parameters
from fastunlearn.engine.overrides import ConfigError
from fastunlearn.engine.trainer import EvalHook, UnlearnTrainer, UnlearnTrainingArguments
from fastunlearn.models import (
    CausalLMAdapter,
    ReferenceModel,
    add_lora,
    default_model_location,
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
    "1e-8 is 0 in fp16) and turn to NaN; load float32 with train.fp16=true, or bfloat16"
)


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


def training_arguments(
    config: UnlearnConfig, deepspeed_config: dict | None, evaluates: bool = False
) -> UnlearnTrainingArguments:
    """The train section as the Trainer's arguments (creating them starts the process group
    under a launcher or DeepSpeed, and under ZeRO-3 makes from_pretrained load sharded).
    ``evaluates``: there are eval hooks to run every train.eval_steps steps."""
    try:
        args = _training_arguments(config, deepspeed_config, evaluates)
    except ValueError as error:  # an optimizer or schedule name it does not know, ...
        raise ConfigError(f"train: {error}") from None
    check_report_to(args.report_to)
    args.device  # noqa: B018 - sets up the devices and process group: ranks are known after
    if deepspeed_config is not None:
        distributed.count_deepspeed_ranks_on_cpu(args.distributed_state)
    return args


def _training_arguments(
    config: UnlearnConfig, deepspeed_config: dict | None, evaluates: bool
) -> UnlearnTrainingArguments:
    train = config.train
    return UnlearnTrainingArguments(
        output_dir=train.output_dir,
        per_device_train_batch_size=config.data.batch_size,
        learning_rate=train.learning_rate,
        weight_decay=train.weight_decay,
        adam_beta1=train.adam_beta1,
        adam_beta2=train.adam_beta2,
        adam_epsilon=train.adam_epsilon,
        optim=train.optim,
        max_steps=train.max_steps,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        warmup_steps=train.warmup_steps,
        lr_scheduler_type=train.lr_scheduler_type,
        max_grad_norm=train.max_grad_norm or 0.0,
        bf16=train.bf16,
        fp16=train.fp16,
        # Mixed precision on a CPU needs the Trainer told so (DeepSpeed picks its own device).
        use_cpu=deepspeed_config is None and not torch.cuda.is_available(),
        seed=train.seed,
        # Every save_steps steps, and always at the end.
        save_strategy="steps",
        save_steps=train.save_steps or train.max_steps,
        save_total_limit=train.save_total_limit,
        logging_steps=train.logging_steps,
        eval_strategy="steps" if evaluates and train.eval_steps else "no",
        eval_steps=train.eval_steps,
        deepspeed=deepspeed_config,
        report_to=list(train.report_to),
        activation_checkpointing=train.activation_checkpointing,
        disable_tqdm=train.disable_tqdm,
        stop_forget_nll_above=train.stop_forget_nll_above,
    )


def check_report_to(report_to: list[str]) -> None:
    """An integration the Trainer does not know or cannot start (its package missing) fails
    here, before the model loads, rather than once training is set up."""
    from transformers.integrations import get_reporting_integration_callbacks

    try:
        for callback in get_reporting_integration_callbacks(report_to):
            callback()
    except (ValueError, RuntimeError, ImportError) as error:
        raise ConfigError(f"train.report_to: {error}") from None


class Unlearner:
    """Runs ``config`` on ``model`` and ``tokenizer`` (default: loaded as config.model says).

    ``eval_hooks``: callables ``hook(model, step)`` (the model being trained) run every
    train.eval_steps steps on every rank (under ZeRO-3 the model is sharded, so each rank must
    run the same forward passes); what they return is logged as ``eval_{name}``.

    Attributes: ``model`` (the model being trained: a PeftModel with LoRA), ``tokenizer``,
    ``trainer`` (the UnlearnTrainer), ``output_dir``, ``is_main_process``.
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
        self.config = config
        self.output_dir = Path(config.train.output_dir)
        deepspeed_config = None
        if config.train.deepspeed is not None:
            # Checked against the run config before anything starts: a contradiction fails fast.
            deepspeed_config = distributed.resolve_deepspeed_config(
                distributed.read_deepspeed_config(config),
                config,
                distributed.launched_world_size(),
                config.train.deepspeed,
            )
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
            distributed.init_process_group()  # gloo on CPUs; accelerate then joins it
        # Kept while this Unlearner lives: under ZeRO-3, from_pretrained then loads sharded.
        self.args = training_arguments(config, deepspeed_config, evaluates=bool(eval_hooks))
        self.is_main_process = self.args.process_index == 0
        if self.is_main_process:  # before anything loads: a folder the run cannot use fails now
            safety.check_writable_dir(self.output_dir, f"train.output_dir={self.output_dir}")
            safety.RunLock(self.output_dir).probe()
        self.tokenizer = tokenizer if tokenizer is not None else load_configured_tokenizer(config)
        check_fits_model(config, model_config, self.tokenizer)
        set_seed(config.train.seed)
        rank, world_size = self.args.process_index, self.args.world_size
        batches = build_sampler(config, self.tokenizer, rank, world_size)
        loaded_here = model is None
        if model is None:
            model = load_configured_model(config)[0]
        if config.lora.enabled:
            lora = config.lora
            model = add_lora(
                model, lora_config(lora.rank, lora.alpha, lora.dropout, lora.target_modules)
            )
        if any(p.dtype == torch.float16 for p in model.parameters() if p.requires_grad):
            raise ConfigError(FP16_WEIGHTS)
        if deepspeed_config is None:
            model.to(self.args.device)  # before the reference copies it
        self.model = model
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
        # The Trainer seeds again as it is built; the run was seeded before the model (its LoRA
        # weights drew from that stream), and dropout goes on drawing from where they left it.
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            self.trainer = UnlearnTrainer(
                module,
                self.args,
                batches,
                processing_class=self.tokenizer,
                forget_statistic=config.objective.method.forget_statistic,
                run_config=config.to_dict(),
                eval_hooks=eval_hooks,
            )

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

    def train(self, resume: bool | str | Path = False) -> Path:
        """Run to train.max_steps; returns the final model folder.

        ``resume``: True continues from the latest checkpoint in train.output_dir, a path
        from that checkpoint. Without it, an output_dir that already holds checkpoints or a
        final model is refused rather than mixed with a new run; so is one another live run
        holds (a lock for the whole run).
        """
        finished = (self.output_dir / FINAL_MODEL_DIR).exists()
        if not resume and finished and checkpoint.latest_checkpoint(self.output_dir) is None:
            raise FileExistsError(
                f"{self.output_dir / FINAL_MODEL_DIR} holds the model of a finished run; "
                "choose another train.output_dir, or remove it to train again there"
            )
        lock = safety.RunLock(self.output_dir).acquire() if self.is_main_process else None
        try:
            with _deterministic(self.config.train.full_determinism):
                self.trainer.train(resume_from_checkpoint=resume or None)
            return self.export()
        finally:
            if lock is not None:
                lock.release()

    def export(self) -> Path:
        """Write ``output_dir/final``: a model folder from_pretrained loads (LoRA merged into
        the weights, or the adapter alone, as lora.export says) and the tokenizer.

        Merging replaces ``self.model`` by the merged model."""
        final = self.output_dir / FINAL_MODEL_DIR
        staging = checkpoint.staging_path(final)
        self.trainer.check_finite_weights(str(final))
        state_dict = self.trainer.full_state_dict()
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
        self.trainer.accelerator.wait_for_everyone()
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
