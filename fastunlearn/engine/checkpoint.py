"""Atomic checkpoint folders that resume a run exactly.

A checkpoint is a folder ``checkpoint-{step}`` in the run's output folder (the Trainer's
name) holding:
  run_state.json          step, sampler position, model fingerprint, the run's config and a
                          digest of each data file: what a resumed run must match
  trainer_state.json, optimizer.pt, scheduler.pt, rng_state*.pth   the Trainer's own
  trainable.safetensors   the trainable parameters (LoRA adapters or the whole model), or
  global_step*/           DeepSpeed's partitioned weights and optimizer state
It is written under a staging name (a leading dot, never matched as a checkpoint) and
renamed into place, so a crash mid-write never leaves a folder that looks complete.
Loading never runs code from the files it reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

PREFIX = "checkpoint-"  # as transformers.Trainer names them
CHECKPOINT_NAME = re.compile(rf"{PREFIX}(\d+)")
STATE_FILE = "run_state.json"
TRAINABLE_FILE = "trainable.safetensors"


class CheckpointMismatchError(ValueError):
    """The checkpoint was written for a different model or adapter setup."""


@dataclass
class RunState:
    """What a checkpoint records besides the Trainer's state: ``config`` (the run's, as a
    dict) and ``inputs`` (a digest of each data file) are what a resumed run must match."""

    step: int
    sampler: dict
    fingerprint: str
    config: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)


# Settings a resumed run may change: how long it runs (not below the checkpoint's step), how it
# reports and keeps checkpoints, and the sections training never reads.
MAY_CHANGE_ON_RESUME = (
    "train.max_steps",
    "train.logging_steps",
    "train.eval_steps",
    "train.save_steps",
    "train.save_total_limit",
    "train.disable_tqdm",
    "train.report_to",
    "train.output_dir",
    "generation.",
    "evaluation.",
)


def check_resumable(
    state: RunState, config: dict, inputs: dict, folder: Path, max_steps: int
) -> None:
    """CheckpointMismatchError naming every setting or data file that differs from the run
    that wrote ``folder``, except the ones that may change, or a ``max_steps`` it has passed."""
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
    if max_steps < state.step:
        raise CheckpointMismatchError(
            f"max_steps={max_steps} is below the step of {folder} ({state.step}); "
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
    return Path(output_dir) / f"{PREFIX}{step}"


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


def write_state(folder: Path, state: RunState) -> None:
    (folder / STATE_FILE).write_text(json.dumps(asdict(state), indent=1))


def read_state(folder: str | Path, model: torch.nn.Module) -> RunState:
    """The checkpoint's state; CheckpointMismatchError unless it was written for ``model``."""
    folder = Path(folder)
    if not (folder / STATE_FILE).is_file():
        raise FileNotFoundError(f"{folder} is not a checkpoint: it has no {STATE_FILE}")
    state = RunState(**json.loads((folder / STATE_FILE).read_text()))
    expected = model_fingerprint(model)
    if state.fingerprint != expected:
        raise CheckpointMismatchError(
            f"checkpoint {folder} was written for a different model or LoRA setup "
            f"(trainable-parameter fingerprint {state.fingerprint}, this model has {expected}); "
            "resume with the same model and lora settings, or start a new run in another output_dir"
        )
    return state


def save_trainable(folder: Path, model: torch.nn.Module) -> None:
    """The trainable parameters (the optimizer and schedule are the Trainer's to save)."""
    trainable = {
        name: p.detach().cpu().contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }
    # Tied parameters appear once in named_parameters, so no two entries share memory.
    save_file(trainable, folder / TRAINABLE_FILE)


def load_trainable(folder: Path, model: torch.nn.Module) -> None:
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in load_file(folder / TRAINABLE_FILE).items():
            parameters[name].copy_(tensor)


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
