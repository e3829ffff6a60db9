"""What a run shows besides checkpoints: TensorBoard scalars, figures and HParams, ``metrics.csv``,
the console line of each epoch and the collapse warning (``RunLogger``, on rank 0 only).

The SummaryWriter is opened once by the entry point and passed in. ``metrics.csv`` gets a
header and one row per epoch; on resume, rows of epochs that will be trained again are dropped
first, so no epoch appears twice.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from trainer.evaluation.collapse import CollapseWatch
from trainer.evaluation.figures import confusion_image
from trainer.evaluation.metrics import OPTIONAL_SCALARS, SCALARS, Evaluation
from trainer.loggers.hparams import add_layout

log = logging.getLogger("trainer.trainer")  # the epoch lines keep the name users grep for


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


def epoch_scalars(
    train: Mapping[str, float], results: Mapping[str, Evaluation], class_names: Sequence[str]
) -> dict[str, float]:
    """Every scalar of one epoch under its TensorBoard tag (``val/acc``, ``val_per_class/cat``)."""
    scalars = {
        "train/loss": train["loss"],
        "train/lr": train["lr"],
        "train/images_per_s": train["images_per_s"],
    }
    for prefix, res in results.items():
        scalars.update({f"{prefix}/{name}": value for name, value in res.scalars().items()})
        for name, acc in zip(class_names, res.acc_per_class, strict=True):
            scalars[f"{prefix}_per_class/{name}"] = acc  # a section of its own
    return scalars


class RunLogger:
    """Rank 0's record of a run: TensorBoard, ``metrics.csv``, the console, the collapse warning."""

    def __init__(
        self,
        run_dir: Path,
        writer: SummaryWriter | None,
        class_names: Sequence[str],
        epochs: int,
        monitor: str,
        prefixes: Sequence[str],
    ) -> None:
        self.run_dir, self.writer, self.class_names = run_dir, writer, list(class_names)
        self.epochs, self.monitor, self.prefixes = epochs, monitor, list(prefixes)
        self.collapse_watch = CollapseWatch(self.class_names, epochs)
        self.csv: MetricsCSV | None = None

    def columns(self) -> list[str]:
        metrics = [f"{p}_{m}" for p in self.prefixes for m in (*SCALARS, *OPTIONAL_SCALARS)]
        return ["epoch", "train_loss", "lr", *metrics, "epoch_time"]

    def open(self, resume_after: int) -> None:
        """Start ``metrics.csv``, keeping the rows of the epochs a resumed run does not train again,
        and lay out the per-class charts."""
        self.csv = MetricsCSV(self.run_dir / "metrics.csv", self.columns(), resume_after=resume_after)
        if self.writer is not None:
            add_layout(self.writer, self.prefixes)

    def record(
        self,
        epoch: int,
        scalars: Mapping[str, float],
        results: Mapping[str, Evaluation],
        epoch_time: float,
        loss_name: str,
    ) -> None:
        """The epoch's scalars and confusion figures in TensorBoard, its row in ``metrics.csv``."""
        self.collapse_watch.check(epoch, results["val"], loss_name)
        if self.writer is not None:
            for prefix, res in results.items():  # a few milliseconds a figure
                figure = confusion_image(res.confusion_matrix, self.class_names, f"{prefix} epoch {epoch}")
                self.writer.add_image(
                    f"{prefix}/confusion_matrix", np.asarray(figure), epoch, dataformats="HWC"
                )
        log_scalars(self.writer, scalars, epoch)  # and flush the figures with them
        if self.csv is not None:
            self.csv.append(
                {"epoch": epoch, "lr": scalars["train/lr"], "epoch_time": epoch_time}
                | {k.replace("/", "_"): v for k, v in scalars.items() if "_per_class/" not in k}
            )

    def epoch_line(
        self,
        epoch: int,
        train: Mapping[str, float],
        results: Mapping[str, Evaluation],
        new_best: float | None,
    ) -> None:
        """One console line of at most 120 columns: the mean training loss; validation loss,
        accuracy and balanced accuracy (in %) of the model, accuracies of its EMA; speed; skipped
        images; "best" when ``trainer.monitor`` improved (best.pt written)."""
        parts = [f"epoch {epoch}/{self.epochs} train loss {train['loss']:.3f}"]
        for prefix, res in results.items():
            loss = "" if prefix == "val_ema" else f" loss {res.loss:.3f}"  # the EMA's is in the CSV
            name = "ema" if prefix == "val_ema" else prefix
            parts.append(f"{name}{loss} acc {100 * res.acc:.2f}% bal {100 * res.balanced_acc:.2f}%")
        parts.append(f"{train['images_per_s']:.0f} img/s")
        if train["skipped"]:
            parts.append(f"skipped {train['skipped']} unreadable image(s)")
        line = " | ".join(parts)
        log.info(line + (" | best" if new_best is not None else ""))
