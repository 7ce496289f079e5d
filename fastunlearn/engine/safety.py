"""What a run refuses to do: go on after a value stops being finite, save such a value, share
its folder with another live run, or fail late over what it could have checked first.

Each refusal is one line that names the problem and what to do about it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import shutil
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

LOCK_FILE = ".lock"


class TrainingDivergedError(RuntimeError):
    """A loss, gradient norm or weight that is not finite: nothing from that point is saved."""


class RunLockedError(FileExistsError):
    """Another live run holds the output folder."""


class StorageFullError(RuntimeError):
    """The device ran out of space while a result was being written."""


def check_finite_stats(step: int, stats: Mapping[str, float], last_saved: str) -> None:
    """Stop at the first step whose statistics (loss, terms, gradient norm) are not finite."""
    bad = [f"{name}={value}" for name, value in stats.items() if not math.isfinite(value)]
    if bad:
        raise TrainingDivergedError(
            f"training diverged at step {step} ({', '.join(bad)}); nothing from this run after "
            f"{last_saved} was saved: lower train.learning_rate or set train.max_grad_norm"
        )


def finite(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """One device-side flag (1.0 or 0.0): every element of every tensor is finite."""
    import torch  # here: the command line reads this module's errors without torch

    flags = [tensor.isfinite().all() for tensor in tensors if tensor.numel()]
    if not flags:
        return torch.ones(())
    return torch.stack(flags).all().float()


class RunLock:
    """An advisory lock on ``output_dir/.lock`` (flock), so that two live runs never write one
    folder. The kernel drops it when its process dies, SIGKILL included: no stale locks. The
    file names the holder, for the error the second run prints."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLockedError(_locked_message(self.path.parent, holder)) from None
        os.ftruncate(fd, 0)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.ctime()}
        os.write(fd, json.dumps(holder).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def probe(self) -> None:
        """Fail now, before any loading, if another run holds the folder (creating nothing)."""
        if not self.path.is_file():
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "unknown"
            raise RunLockedError(_locked_message(self.path.parent, holder)) from None
        finally:
            os.close(fd)


def _locked_message(folder: Path, holder: str) -> str:
    return (
        f"{folder} is in use by another live run ({holder}); wait for it to finish or choose "
        "another train.output_dir"
    )


def check_writable_dir(folder: str | Path, setting: str) -> None:
    """Fail before the model loads if ``folder`` could not be created or written; creates
    nothing (bad input leaves no trace). ``setting`` names what the user wrote, as key=value."""
    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"{setting} cannot be written: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{setting} cannot be written: {existing} is not writable")


@contextlib.contextmanager
def reporting_full_disk(what: str, partial: Path) -> Iterator[None]:
    """Turn "no space left on device" into one line, removing the half-written ``partial``."""
    try:
        yield
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        shutil.rmtree(partial, ignore_errors=True)
        raise StorageFullError(
            f"no space left on the device while writing {what}; the last complete checkpoint "
            "is intact: free some space, then run again with --resume",
        ) from None
