"""The two ways a step runs: plain PyTorch on one device, or a DeepSpeed engine.

Both expose the same few operations to the training loop: forward a micro-batch,
accumulate its gradient, finish the optimizer step, save and load the training state
inside a checkpoint folder, and average stats over ranks.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from transformers import get_scheduler

from fastunlearn.engine import checkpoint
from fastunlearn.engine.config import TrainConfig
from fastunlearn.engine.objective import ObjectiveModule
from fastunlearn.objectives import ObjectiveOutput, PairedBatch

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
DEEPSPEED_TAG = "deepspeed"


def make_optimizer(module: torch.nn.Module, train: TrainConfig) -> torch.optim.AdamW:
    trainable = [p for p in module.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        trainable,
        lr=train.learning_rate,
        betas=(train.adam_beta1, train.adam_beta2),
        eps=train.adam_epsilon,
        weight_decay=train.weight_decay,
    )


def make_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig):
    return get_scheduler(
        train.lr_scheduler,
        optimizer,
        num_warmup_steps=train.warmup_steps,
        num_training_steps=train.max_steps,
    )


class PlainBackend:
    """One process, one device. bf16/fp16 run the forward under autocast (fp16 with a
    gradient scaler); the weights and the optimizer stay in their own dtype."""

    rank, world_size, is_main = 0, 1, True

    def __init__(self, module: ObjectiveModule, train: TrainConfig, device: torch.device):
        self.module, self.train, self.device = module.to(device), train, device
        self.optimizer = make_optimizer(module, train)
        self.scheduler = make_scheduler(self.optimizer, train)
        self.autocast_dtype = AUTOCAST_DTYPES.get(train.precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=train.precision == "fp16")

    def forward(self, batch: PairedBatch) -> ObjectiveOutput:
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype
            else contextlib.nullcontext()
        )
        with autocast:
            return self.module(batch)

    def accumulate(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss / self.train.gradient_accumulation_steps).backward()

    def finish_step(self) -> float | None:
        """Clip, step the optimizer and the LR schedule; the gradient norm before clipping."""
        norm = None
        if self.train.max_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            trainable = [p for p in self.module.parameters() if p.requires_grad]
            norm = float(torch.nn.utils.clip_grad_norm_(trainable, self.train.max_grad_norm))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    @property
    def learning_rate(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def save(self, folder: Path) -> None:
        checkpoint.save_trainable(folder, self.module.model, self.optimizer, self.scheduler)
        if self.scaler.is_enabled():
            torch.save(self.scaler.state_dict(), folder / "grad_scaler.pt")

    def load(self, folder: Path) -> None:
        checkpoint.load_trainable(folder, self.module.model, self.optimizer, self.scheduler)
        if self.scaler.is_enabled():
            self.scaler.load_state_dict(torch.load(folder / "grad_scaler.pt", weights_only=True))

    def average(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def barrier(self) -> None:
        """Nothing to wait for in one process."""

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """None: the model in memory is whole and can be saved as it is."""
        return None


class DeepSpeedBackend:
    """A DeepSpeed engine around the ObjectiveModule: ZeRO 0-3, bf16/fp16, accumulation,
    clipping and the LR schedule all run inside DeepSpeed (config from distributed.py)."""

    def __init__(
        self,
        module: ObjectiveModule,
        train: TrainConfig,
        deepspeed_config: dict,
        rank: int,
        world_size: int,
    ):
        import deepspeed

        self.rank, self.world_size, self.is_main = rank, world_size, rank == 0
        optimizer = make_optimizer(module, train)
        # Built on our AdamW before DeepSpeed wraps it, as get_scheduler needs a torch Optimizer.
        scheduler = make_scheduler(optimizer, train)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=module, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config
        )
        self.module, self.device = module, self.engine.device

    def forward(self, batch: PairedBatch) -> ObjectiveOutput:
        return self.engine(batch)

    def accumulate(self, loss: torch.Tensor) -> None:
        # DeepSpeed scales the loss for accumulation itself, and engine.step() only updates
        # the weights (and the LR) at the accumulation boundary.
        self.engine.backward(loss)
        self.engine.step()

    def finish_step(self) -> float | None:
        norm = self.engine.get_global_grad_norm()
        return None if norm is None else float(norm)

    @property
    def learning_rate(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def save(self, folder: Path) -> None:
        self.engine.save_checkpoint(str(folder), tag=DEEPSPEED_TAG, save_latest=False)

    def load(self, folder: Path) -> None:
        # DeepSpeed unpickles its files with weights_only=False, which can run code stored
        # in them; read them as data, allowing only DeepSpeed's own plain record types.
        self.engine.checkpoint_engine.load = _load_deepspeed_file
        loaded, _ = self.engine.load_checkpoint(
            str(folder),
            tag=DEEPSPEED_TAG,
            load_optimizer_states=True,
            load_lr_scheduler_states=True,
        )
        if loaded is None:
            raise FileNotFoundError(
                f"{folder} holds no DeepSpeed state ({DEEPSPEED_TAG}/); was it written "
                "by a plain-PyTorch run?"
            )

    def average(self, values: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        values = values.to(self.device)
        # SUM then divide: gloo has no AVG reduction.
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values / self.world_size

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Under ZeRO-3, the whole model gathered layer by layer (on rank 0; {} elsewhere);
        None when every rank holds the whole model already."""
        if self.engine.zero_optimization_stage() != 3:
            return None
        gathered = self.engine._zero3_consolidated_16bit_state_dict()  # what accelerate uses too
        prefix = "model."  # the ObjectiveModule's attribute holding the model
        return {name.removeprefix(prefix): tensor for name, tensor in (gathered or {}).items()}


def _load_deepspeed_file(path: str, map_location=None):
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    with torch.serialization.safe_globals(
        [ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address]
    ):
        return torch.load(path, map_location=map_location, weights_only=True)
