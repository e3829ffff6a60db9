"""``RUN/metrics.csv``: a header, then one row per epoch with every headline number; and
``RUN/per_class.csv``: each class's recall per epoch and model (epoch, model, class, recall; empty
for a class without validation images).
On resume, the rows of epochs that will be trained again are dropped first, so no epoch
appears twice."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from common.run_folder import RunFolder
from trainer.loggers.base import EpochRecord, RunInfo
from trainer.results import PER_CLASS, FitSummary, column, csv_columns


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

    def append(self, row: Mapping[str, float | int | str]) -> None:
        self.extend([row])

    def extend(self, rows: Iterable[Mapping[str, float | int | str]]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore").writerows(
                {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()} for row in rows
            )


class CSVLogger:
    """``RUN/metrics.csv`` and ``RUN/per_class.csv``, with 6 significant digits per number."""

    name = "csv"

    def __init__(self) -> None:
        self.file: MetricsCSV | None = None
        self.per_class: MetricsCSV | None = None
        self.class_names: list[str] = []

    def open(self, run: RunInfo, resume_after: int) -> None:
        folder = RunFolder(run.run_dir)
        self.file = MetricsCSV(folder.metrics_csv, csv_columns(run.prefixes), resume_after=resume_after)
        columns = ["epoch", "model", "class", "recall"]
        self.per_class = MetricsCSV(folder.per_class_csv, columns, resume_after=resume_after)
        self.class_names = run.class_names

    def log_epoch(self, record: EpochRecord) -> None:
        assert self.file is not None
        scalars = record.scalars
        self.file.append(
            {"epoch": record.epoch, "lr": scalars["train/lr"], "epoch_time": record.epoch_time}
            | {column(k): v for k, v in scalars.items() if f"{PER_CLASS}/" not in k}
        )
        assert self.per_class is not None
        self.per_class.extend(
            {"epoch": record.epoch, "model": model, "class": name, "recall": "" if recall is None else recall}
            for model, res in record.results.items()
            for name, recall in zip(self.class_names, res.acc_per_class, strict=True)
        )

    def close(self, summary: FitSummary | None) -> None:
        pass
