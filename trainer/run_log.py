"""What a run shows besides checkpoints, on rank 0 only (``RunLogger``): the console line of each
epoch, the error galleries as files, and every number to the configured logger backends
(``trainer.loggers``: TensorBoard, metrics.csv, MLflow), which the loop knows only by their
protocol.

An epoch's record (its gallery files, its numbers and pictures to the backends) is written on a
worker thread while the next epoch trains, one epoch at a time and in order: drawing and
encoding pictures took a tenth of a small epoch. Recording an epoch first waits for the one
before, and ``close`` for the last, so a failure surfaces and no record is lost at the end.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common.run_folder import RunFolder
from trainer.config import TrainerConfig
from trainer.evaluation.gallery import save_png
from trainer.evaluation.metrics import Evaluation
from trainer.hooks.base import EpochEnd
from trainer.loggers.base import EpochRecord, Loggers, RunInfo
from trainer.parts import RunContext
from trainer.results import DETAIL_CLASSES, METRICS, MODELS, PER_CLASS, FitSummary, TrainStats, tag

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
            if acc is not None:  # a class without validation images has no curve
                scalars[f"{prefix}{PER_CLASS}/{name}"] = acc  # a section of its own
    return scalars


class RunLogger:
    """Rank 0's record of a run: the console, the galleries' files, and the logger backends."""

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
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="run-log")
        self.pending: Future[None] | None = None  # the record being written

    @classmethod
    def of_run(
        cls, run: RunContext, config: TrainerConfig, names: list[str], counts: list[int], ema: bool
    ) -> RunLogger:
        """The run logger of ``run`` on classes ``names`` with ``counts`` training images, whose raw
        model is validated (``val``) and, with ``ema``, its average (``val_ema``)."""
        models = list(MODELS if ema else MODELS[:1])
        info = run.info or RunInfo(run.folder.root, list(names), models, run.config)
        info = dataclasses.replace(info, prefixes=models, class_counts=list(counts))
        loggers = Loggers(run.loggers)
        return cls(info, loggers, config.epochs, config.monitor, config.monitor_mode, config.posthoc_tau)

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

    def record(self, end: EpochEnd, scalars: Mapping[str, float]) -> Future[None]:
        """The epoch's pictures (error galleries) as RUN/galleries/<model>_epoch<N>.png, then its
        numbers and pictures to every backend: on the worker thread, once the epoch before is.
        Returns the write in flight."""
        self.wait()
        record = EpochRecord(end.epoch, dict(scalars), end.results, end.train.time, dict(end.pictures))
        self.pending = self.worker.submit(self.write, record)
        return self.pending

    def write(self, record: EpochRecord) -> None:
        for prefix, picture in record.pictures.items():
            self.save_picture(picture, RunFolder(self.run.run_dir).gallery(prefix, record.epoch))
        self.loggers.log_epoch(record)

    def wait(self) -> None:
        """The record in flight written (its error raised here)."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def close(self, summary: FitSummary | None) -> None:
        """Wait for the last epoch's record; save the pictures of best.pt's epoch
        (RUN/galleries/<model>_best.png), then close every backend with the fit's summary (None:
        the run stopped early)."""
        try:
            self.wait()
        finally:
            self.worker.shutdown()
        for prefix, picture in (summary.pictures if summary is not None else {}).items():
            self.save_picture(picture, RunFolder(self.run.run_dir).best_gallery(prefix))
        self.loggers.close(summary)

    @staticmethod
    def save_picture(picture: Any, path: Path) -> None:
        try:
            save_png(picture, path)
        except OSError as err:  # a picture must not stop training: said, and training goes on
            log.warning("The error gallery %s was not written (%s); training goes on.", path, err.strerror)

    def epoch_line(self, end: EpochEnd, new_best: float | None) -> None:
        """One console line (after the log's prefix, at most 150 columns up to epoch 999 and 9,999
        img/s, unless images were skipped): the mean training loss; each model's numbers that the
        metric table shows on the console (shares in %; the EMA's shares only, its loss is in the
        CSV); speed; skipped images; "best" when ``trainer.monitor`` improved (best.pt written)."""
        train = end.train
        parts = [f"epoch {end.epoch}/{self.epochs} train loss {train.loss:.3f}"]
        for prefix, res in end.results.items():
            shown = [prefix if prefix == MODELS[0] else "ema"]
            for m in METRICS:
                value = getattr(res, m.name, None)
                if m.console and value is not None and (m.share or prefix == MODELS[0]):
                    shown.append(f"{m.console} {100 * value:.1f}%" if m.share else f"{m.console} {value:.3f}")
            parts.append(" ".join(shown))
        parts.append(f"{train.images_per_s:.0f} img/s")
        if train.skipped:
            parts.append(f"skipped {train.skipped} unreadable image(s)")
        line = " | ".join(parts)
        log.info(line + (" | best" if new_best is not None else ""))
