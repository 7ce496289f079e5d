"""Atomic checkpoint folders that resume a run exactly.

A checkpoint is a folder ``checkpoint-{step:07d}`` in the run's output folder holding:
  state.json                  step, sampler position, model fingerprint, the run's config
  rng-{rank}.safetensors/.json  each rank's torch (CPU, CUDA), Python and NumPy RNG states
and the training state, written by the training backend:
  plain PyTorch   trainable.safetensors (trainable parameters: LoRA adapters or the whole
                  model), optimizer.pt, scheduler.pt (state dicts, read with weights_only=True)
  DeepSpeed       deepspeed/ (engine.save_checkpoint: partitioned weights, optimizer, scheduler)
It is written under a staging name (a leading dot, never matched as a checkpoint) and
renamed into place, so a crash mid-write never leaves a folder that looks complete.
Loading never runs code from the files it reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

PREFIX = "checkpoint-"
CHECKPOINT_NAME = re.compile(rf"{PREFIX}(\d+)")
STATE_FILE = "state.json"


class CheckpointMismatchError(ValueError):
    """The checkpoint was written for a different model or adapter setup."""


@dataclass
class TrainerState:
    """What a checkpoint records besides tensors: ``config`` (the run's, as a dict) and
    ``inputs`` (a digest of each data file) are what a resumed run must match."""

    step: int
    sampler: dict
    fingerprint: str
    config: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)


# Settings a resumed run may change: how long it runs (not below the checkpoint's step), how it
# reports and keeps checkpoints, and the sections training never reads.
MAY_CHANGE_ON_RESUME = (
    "train.max_steps",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.progress_bar",
    "train.output_dir",
    "generation.",
    "evaluation.",
)


def check_resumable(state: TrainerState, config: dict, inputs: dict, folder: Path) -> None:
    """CheckpointMismatchError naming every setting or data file that differs from the run
    that wrote ``folder``, except the ones that may change."""
    saved, current = _flatten(state.config), _flatten(config)
    changed = [
        f"{key} ({saved.get(key)!r} there, {current.get(key)!r} now)"
        for key in sorted(saved.keys() | current.keys())
        if saved.get(key) != current.get(key) and not key.startswith(MAY_CHANGE_ON_RESUME)
    ]
    changed += [
        f"the contents of {key} ({current.get(key)})"
        for key in sorted(state.inputs)
        if inputs.get(key) != state.inputs[key]
    ]
    if changed:
        raise CheckpointMismatchError(
            f"cannot resume from {folder}: changed since it was written: {'; '.join(changed)}. "
            "Only the number of steps, logging, evaluation and checkpointing settings may "
            "change; start a new run in another train.output_dir instead"
        )
    max_steps = config.get("train", {}).get("max_steps")
    if max_steps is not None and max_steps < state.step:
        raise CheckpointMismatchError(
            f"train.max_steps={max_steps} is below the step of {folder} ({state.step}); "
            "resuming cannot go back"
        )


DATA_FILES = (
    "data.forget.path",
    "data.positives.path",
    "data.negatives",
    "data.retain.path",
    "data.normal.path",
)


def input_digests(config: dict) -> dict[str, str]:
    """SHA-256 of each data file the config names: a file replaced under the same name
    (or the same modification time) is still a different run."""
    flat, digests = _flatten(config), {}
    for key in DATA_FILES:
        path = flat.get(key)
        if path and Path(path).is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as file:
                for block in iter(lambda: file.read(1 << 20), b""):
                    digest.update(block)
            digests[key] = digest.hexdigest()
    return digests


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def model_fingerprint(model: torch.nn.Module) -> str:
    """Hash of the trainable parameter names and shapes: what a checkpoint must match.

    Shapes are the full ones under ZeRO-3 too (``ds_shape``; the local tensor is a shard).
    """
    digest = hashlib.sha256()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            shape = tuple(getattr(parameter, "ds_shape", parameter.shape))
            digest.update(f"{name}:{shape};".encode())
    return digest.hexdigest()[:16]


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f"{PREFIX}{step:07d}"


def staging_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp")


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first. Staging folders start with a dot and never match."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and CHECKPOINT_NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT_NAME.fullmatch(p.name).group(1)))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def publish(staging: Path, final: Path, keep: int) -> Path:
    """Make a fully written staging folder a checkpoint (fsync, then one rename), then keep
    only the ``keep`` newest checkpoints (0 keeps all)."""
    _fsync_tree(staging)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    _fsync_dir(final.parent)
    if keep > 0:
        for old in list_checkpoints(final.parent)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def write_state(folder: Path, state: TrainerState) -> None:
    (folder / STATE_FILE).write_text(json.dumps(asdict(state), indent=1))


def read_state(folder: str | Path, model: torch.nn.Module) -> TrainerState:
    """The checkpoint's state; CheckpointMismatchError unless it was written for ``model``."""
    folder = Path(folder)
    if not (folder / STATE_FILE).is_file():
        raise FileNotFoundError(f"{folder} is not a checkpoint: it has no {STATE_FILE}")
    state = TrainerState(**json.loads((folder / STATE_FILE).read_text()))
    expected = model_fingerprint(model)
    if state.fingerprint != expected:
        raise CheckpointMismatchError(
            f"checkpoint {folder} was written for a different model or LoRA setup "
            f"(trainable-parameter fingerprint {state.fingerprint}, this model has {expected}); "
            "resume with the same model and lora settings, or start a new run in another output_dir"
        )
    return state


def save_rng(folder: Path, rank: int) -> None:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{index}"] = state
    save_file(tensors, folder / f"rng-{rank}.safetensors")
    numpy_state = np.random.get_state()
    host_states = {
        "python": random.getstate(),
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
    }
    (folder / f"rng-{rank}.json").write_text(json.dumps(host_states))


def load_rng(folder: Path, rank: int) -> None:
    tensors = load_file(folder / f"rng-{rank}.safetensors")
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        cuda_states = [
            tensors[f"torch_cuda_{i}"]
            for i in range(torch.cuda.device_count())
            if f"torch_cuda_{i}" in tensors
        ]
        if cuda_states:
            torch.cuda.set_rng_state_all(cuda_states)
    host_states = json.loads((folder / f"rng-{rank}.json").read_text())
    version, internal, gauss = host_states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached_gauss = host_states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached_gauss))


def save_trainable(folder: Path, model: torch.nn.Module, optimizer, scheduler) -> None:
    """The plain-PyTorch training state: trainable parameters, optimizer, LR scheduler."""
    trainable = {
        name: p.detach().cpu().contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }
    # Tied parameters appear once in named_parameters, so no two entries share memory.
    save_file(trainable, folder / "trainable.safetensors")
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    torch.save(scheduler.state_dict(), folder / "scheduler.pt")


def load_trainable(folder: Path, model: torch.nn.Module, optimizer, scheduler) -> None:
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in load_file(folder / "trainable.safetensors").items():
            parameters[name].copy_(tensor)
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
