"""What a run writes besides checkpoints: TensorBoard scalars and ``metrics.csv``.

The SummaryWriter is opened once by the entry point and passed in. ``metrics.csv`` gets a
header and one row per epoch; on resume, rows of epochs that will be trained again are dropped
first, so no epoch appears twice.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


class MetricsCSV:
    """``metrics.csv``: a header, then one row per epoch."""

    def __init__(self, path: Path, columns: Sequence[str], resume_after: int | None = None) -> None:
        self.path = path
        self.columns = list(columns)
        if resume_after is not None and path.is_file():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= resume_after]
        else:
            rows = []
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: Mapping[str, float | int]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore").writerow(
                {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()}
            )


def log_scalars(writer: SummaryWriter | None, scalars: Mapping[str, float], step: int) -> None:
    """Add each ``tag: value`` to TensorBoard at ``step`` (the epoch)."""
    if writer is None:
        return
    for tag, value in scalars.items():
        writer.add_scalar(tag, value, step)
    writer.flush()
