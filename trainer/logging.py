"""What a run shows besides checkpoints, on rank 0 only (``RunLogger``): the console line of each
epoch and the collapse warning here, and every number to the configured logger backends
(``trainer.loggers``: TensorBoard, metrics.csv, MLflow), which the loop knows only by their
protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from PIL import Image

from trainer.evaluation.collapse import CollapseWatch
from trainer.evaluation.gallery import save_png
from trainer.evaluation.metrics import Evaluation
from trainer.loggers.base import EpochRecord, Loggers, RunInfo
from trainer.progress import FitSummary
from trainer.results import DETAIL_CLASSES, PER_CLASS, TrainStats, tag

log = logging.getLogger("trainer.trainer")  # the epoch lines keep the name users grep for


def epoch_scalars(
    train: TrainStats, results: Mapping[str, Evaluation], class_names: Sequence[str]
) -> dict[str, float]:
    """Every scalar of one epoch under its TensorBoard tag (``val/acc``, ``val_per_class/cat``; the
    per-class ones up to ``DETAIL_CLASSES`` classes)."""
    scalars = train.scalars()
    for prefix, res in results.items():
        scalars.update({tag(prefix, name): value for name, value in res.scalars().items()})
        if len(class_names) > DETAIL_CLASSES:
            continue  # too many curves to read: every class is in per_class.csv
        for name, acc in zip(class_names, res.acc_per_class, strict=True):
            scalars[f"{prefix}{PER_CLASS}/{name}"] = acc  # a section of its own
    return scalars


class RunLogger:
    """Rank 0's record of a run: the console, the collapse warning, and the logger backends."""

    def __init__(
        self,
        run: RunInfo,
        loggers: Loggers,
        epochs: int,
        monitor: str,
        monitor_mode: str = "max",
        posthoc_tau: float | None = None,
    ) -> None:
        self.run, self.loggers = run, loggers
        self.epochs, self.monitor, self.monitor_mode = epochs, monitor, monitor_mode
        self.posthoc_tau = posthoc_tau
        self.collapse_watch = CollapseWatch(run.class_names, epochs)

    def open(self, resume_after: int) -> None:
        """Say what chooses best.pt and what the epoch lines show; open every backend
        (``resume_after``: the last epoch already recorded)."""
        highest = "highest" if self.monitor_mode == "max" else "lowest"
        adjusted = (
            f"; adj: balanced accuracy after post-hoc logit adjustment, tau {self.posthoc_tau:g}"
            if self.posthoc_tau is not None
            else ""
        )
        log.info("best.pt: the epoch of %s %s (trainer.monitor)%s", highest, self.monitor, adjusted)
        self.loggers.open(self.run, resume_after)

    def record(
        self,
        epoch: int,
        scalars: Mapping[str, float],
        results: Mapping[str, Evaluation],
        epoch_time: float,
        loss_advice: str | None,
        pictures: Mapping[str, Image.Image] | None = None,
    ) -> None:
        """The collapse check, the error galleries as RUN/galleries/<model>_epoch<N>.png, then the
        epoch's numbers and pictures to every backend."""
        self.collapse_watch.check(epoch, results["val"], loss_advice)
        for prefix, picture in (pictures or {}).items():
            path = self.run.run_dir / "galleries" / f"{prefix}_epoch{epoch:03d}.png"
            try:
                save_png(picture, path)
            except OSError as err:  # a picture must not stop training: said, and training goes on
                log.warning(
                    "The error gallery %s was not written (%s); training goes on.", path, err.strerror
                )
        self.loggers.log_epoch(EpochRecord(epoch, scalars, results, epoch_time, dict(pictures or {})))

    def close(self, summary: FitSummary | None) -> None:
        """Close every backend with the fit's summary (None: the run stopped early)."""
        self.loggers.close(summary)

    def epoch_line(
        self,
        epoch: int,
        train: TrainStats,
        results: Mapping[str, Evaluation],
        new_best: float | None,
    ) -> None:
        """One console line (after the log's prefix, at most 135 columns up to epoch 999 and 9,999
        img/s, unless images were skipped): the mean training loss; validation loss, accuracy,
        balanced accuracy and post-hoc adjusted balanced accuracy (in %) of the model, accuracies
        of its EMA; speed; skipped images; "best" when ``trainer.monitor`` improved (best.pt
        written)."""
        parts = [f"epoch {epoch}/{self.epochs} train loss {train.loss:.3f}"]
        for prefix, res in results.items():
            loss = "" if prefix == "val_ema" else f" loss {res.loss:.3f}"  # the EMA's is in the CSV
            name = "ema" if prefix == "val_ema" else prefix
            adjusted = res.balanced_acc_adjusted
            adj = "" if adjusted is None else f" adj {100 * adjusted:.1f}%"
            parts.append(f"{name}{loss} acc {100 * res.acc:.1f}% bal {100 * res.balanced_acc:.1f}%{adj}")
        parts.append(f"{train.images_per_s:.0f} img/s")
        if train.skipped:
            parts.append(f"skipped {train.skipped} unreadable image(s)")
        line = " | ".join(parts)
        log.info(line + (" | best" if new_best is not None else ""))
