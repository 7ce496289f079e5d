"""Run metrics: one JSON object per logged step in ``metrics.jsonl``, and TensorBoard
event files in ``tensorboard/`` when the tensorboard package is installed."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path

METRICS_FILE = "metrics.jsonl"


class MetricsLogger:
    """Appends rows {"step": s, name: value, ...} to ``output_dir/metrics.jsonl``.

    ``resume_step``: rows logged after that step by an interrupted run are dropped first,
    so that a resumed run's file reads as one uninterrupted run.
    """

    def __init__(self, output_dir: str | Path, resume_step: int | None = None):
        self.path = Path(output_dir) / METRICS_FILE
        if resume_step is not None and self.path.is_file():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.tensorboard = None
        if importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(
                str(Path(output_dir) / "tensorboard"),
                purge_step=None if resume_step is None else resume_step + 1,
            )

    def log(self, step: int, values: Mapping[str, float]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, **values}) + "\n")
        if self.tensorboard is not None:
            for name, value in values.items():
                self.tensorboard.add_scalar(name, value, step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
