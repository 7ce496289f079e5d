"""What every objective returns."""

from __future__ import annotations

from typing import NamedTuple

import torch


class ObjectiveOutput(NamedTuple):
    """``loss`` to backpropagate, and ``stats``: detached scalar tensors for logging.

    Stats stay tensors so that computing them never waits for the device; the logger
    calls ``.item()`` when it writes them.
    """

    loss: torch.Tensor
    stats: dict[str, torch.Tensor]
