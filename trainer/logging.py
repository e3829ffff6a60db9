"""What a run writes besides checkpoints: TensorBoard scalars and HParams, ``metrics.csv``.

The SummaryWriter is opened once by the entry point and passed in. ``metrics.csv`` gets a
header and one row per epoch; on resume, rows of epochs that will be trained again are dropped
first, so no epoch appears twice.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and None become strings (HParams takes scalars)."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def log_hparams(writer: SummaryWriter, config: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
    """The run's settings and its final and best metrics in TensorBoard's HParams tab."""
    writer.add_hparams(flatten(config), dict(metrics), run_name=".")
    writer.flush()


def hparam_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The numbers a sweep compares in TensorBoard's HParams tab, from ``Trainer.fit``'s summary."""
    metrics = {"hparam/best_metric": summary["best_metric"]}
    for prefix, res in (summary["final"] or {}).items():
        metrics.update({f"hparam/final_{prefix}_{k}": res[k] for k in ("acc", "balanced_acc", "macro_f1")})
    return {k: v for k, v in metrics.items() if v is not None}
