"""``RUN/metrics.csv``: a header, then one row per epoch with every headline number (no
per-class columns: those are in TensorBoard). On resume, the rows of epochs that will be trained
again are dropped first, so no epoch appears twice."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from trainer.loggers.base import EpochRecord, RunInfo
from trainer.results import PER_CLASS, column, csv_columns
from trainer.state import FitSummary


class MetricsCSV:
    """A CSV file with a header, then one row per epoch."""

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


class CSVLogger:
    """``RUN/<filename>`` with 6 significant digits per number."""

    name = "csv"

    def __init__(self, filename: str = "metrics.csv") -> None:
        self.filename = filename
        self.file: MetricsCSV | None = None

    def open(self, run: RunInfo, resume_after: int) -> None:
        self.file = MetricsCSV(
            run.run_dir / self.filename, csv_columns(run.prefixes), resume_after=resume_after
        )

    def log_epoch(self, record: EpochRecord) -> None:
        assert self.file is not None
        scalars = record.scalars
        self.file.append(
            {"epoch": record.epoch, "lr": scalars["train/lr"], "epoch_time": record.epoch_time}
            | {column(k): v for k, v in scalars.items() if f"{PER_CLASS}/" not in k}
        )

    def close(self, summary: FitSummary | None) -> None:
        pass
