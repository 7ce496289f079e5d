"""DeepSpeed setup: its config filled from the run config, and the process group.

The Trainer runs DeepSpeed; this module checks its config against the run config first, in
the run config's terms, and starts the process group (gloo on CPUs) the Trainer then joins.
DeepSpeed is imported only here and only when a run uses it.
"""

from __future__ import annotations

import copy
import json
import os
import socket
from pathlib import Path

from fastunlearn.engine.config import UnlearnConfig
from fastunlearn.engine.overrides import ConfigError


def launched_by_deepspeed() -> bool:
    """True when a distributed launcher (deepspeed, torchrun, accelerate) started this
    process: they set WORLD_SIZE."""
    return "WORLD_SIZE" in os.environ


def launched_world_size() -> int:
    """The number of ranks the launcher started (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def read_deepspeed_config(config: UnlearnConfig) -> dict:
    """The DeepSpeed JSON file of train.deepspeed, before filling."""
    path = Path(config.train.deepspeed)
    if not path.is_file():
        raise FileNotFoundError(f"train.deepspeed: DeepSpeed config not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"train.deepspeed: {path} is not valid JSON: {error}") from None


def resolve_deepspeed_config(
    raw: dict, config: UnlearnConfig, world_size: int, source: str = "DeepSpeed config"
) -> dict:
    """The DeepSpeed config with our values in place of "auto" (and of absent keys).

    A value set explicitly that contradicts the run config is a ConfigError listing every
    such key: the run config is the one source of truth for batch sizes, accumulation,
    clipping and precision. The optimizer and LR schedule come from train.*, so DeepSpeed
    "optimizer" and "scheduler" sections are refused.
    """
    resolved = copy.deepcopy(raw)
    for section in ("optimizer", "scheduler"):
        if section in resolved:
            raise ConfigError(
                f"{source}: remove its {section!r} section; the optimizer (AdamW) and the LR "
                "schedule come from train.learning_rate, train.lr_scheduler_type and the other "
                "train.* settings"
            )
    train, data = config.train, config.data
    ours = {
        "train_micro_batch_size_per_gpu": (data.batch_size, "data.batch_size"),
        "gradient_accumulation_steps": (
            train.gradient_accumulation_steps,
            "train.gradient_accumulation_steps",
        ),
        "train_batch_size": (
            data.batch_size * train.gradient_accumulation_steps * world_size,
            "data.batch_size * train.gradient_accumulation_steps * world size",
        ),
        "gradient_clipping": (train.max_grad_norm or 0.0, "train.max_grad_norm"),
        "bf16.enabled": (train.bf16, "train.bf16"),
        "fp16.enabled": (train.fp16, "train.fp16"),
    }
    contradictions = []
    for dotted, (value, our_name) in ours.items():
        *sections, key = dotted.split(".")
        node = resolved
        for section in sections:
            node = node.setdefault(section, {})
        current = node.get(key, "auto")
        if current == "auto":
            node[key] = value
        elif current != value:
            contradictions.append(f"  {dotted} = {current!r} there, but {our_name} gives {value!r}")
    if contradictions:
        raise ConfigError(
            f"{source} contradicts the run config:\n"
            + "\n".join(contradictions)
            + '\nset these keys to "auto" (filled from the run config) or change the run config'
        )
    # Checked, then left to DeepSpeed to derive: the Trainer would compare it to a product it
    # takes before the process group is up (one process), and refuse a correct value.
    del resolved["train_batch_size"]
    return resolved


def fill_hidden_size_keys(resolved: dict, hidden_size: int) -> None:
    """ZeRO bucket sizes and the ZeRO-3 persistence threshold left "auto": the values HF's
    Trainer uses, from the model's hidden size."""
    zero = resolved.get("zero_optimization", {})
    defaults = {
        "reduce_bucket_size": hidden_size * hidden_size,
        "stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
        "stage3_param_persistence_threshold": 10 * hidden_size,
    }
    for key, value in defaults.items():
        if zero.get(key) == "auto":
            zero[key] = value


def zero_stage(resolved: dict) -> int:
    return int(resolved.get("zero_optimization", {}).get("stage", 0))


def init_process_group() -> tuple[int, int]:
    """Start (or join) the process group; returns (rank, world size).

    Without a launcher this is a one-process group on a free local port. CPU runs use the
    gloo backend (DeepSpeed's CPU default, oneCCL, is rarely installed).
    """
    import deepspeed
    import torch.distributed as dist
    from deepspeed.accelerator import get_accelerator

    backend = "gloo" if get_accelerator().device_name() == "cpu" else None
    if launched_by_deepspeed():
        deepspeed.init_distributed(dist_backend=backend, verbose=False)
    else:
        os.environ.setdefault("LOCAL_RANK", "0")  # the DeepSpeed engine reads it
        deepspeed.init_distributed(
            dist_backend=backend,
            auto_mpi_discovery=False,
            verbose=False,
            init_method=f"tcp://127.0.0.1:{free_port()}",
            rank=0,
            world_size=1,
        )
    return dist.get_rank(), dist.get_world_size()


def count_deepspeed_ranks_on_cpu(state) -> None:
    """accelerate knows no CPU backend for DeepSpeed, so on CPUs its process state (``state``:
    the TrainingArguments' distributed_state) counts one process per rank: each would then
    save, log and average alone. Take the ranks from the process group DeepSpeed started."""
    import torch.distributed as dist

    if dist.is_initialized() and state.num_processes != dist.get_world_size():
        state.num_processes, state.process_index = dist.get_world_size(), dist.get_rank()
        state.local_process_index = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        state.backend = dist.get_backend()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
