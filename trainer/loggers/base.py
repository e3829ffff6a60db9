"""What every logger backend implements, and the fan-out that keeps a failing one from stopping
training (the shape of Lightning's ``loggers/logger.py``).

A backend is built from its config (``configs/logger/NAME.yaml``, before any data is read, so a
bad setting is refused early), opened once the run's state is known, given each epoch's record,
and closed with the fit summary (None when the run stopped on a signal or an error). Only rank 0
has loggers. A backend that raises (an unwritable store, a full disk) is named in one warning with
the reason and dropped for the rest of the run; training and checkpoints go on unaffected.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from trainer.evaluation.metrics import Evaluation
from trainer.results import FitSummary

log = logging.getLogger("train")


@dataclass(frozen=True)
class RunInfo:
    """What a logger knows of the run it records."""

    run_dir: Path
    class_names: list[str]
    prefixes: list[str]  # the models validated: val, and val_ema with EMA
    config: Mapping[str, Any]  # the run's config as its checkpoint records it
    overrides: list[str] = field(default_factory=list)  # the command line's
    varied: list[str] = field(default_factory=list)  # the keys a sweep varies, if any
    sweep_dir: Path | None = None  # the sweep's folder, for a job of a sweep
    choices: Mapping[str, str] = field(default_factory=dict)  # config group -> option (loss -> ldam)
    class_counts: list[int] = field(default_factory=list)  # training images per class


@dataclass(frozen=True)
class EpochRecord:
    """One epoch's numbers: every scalar under its TensorBoard tag, each model's evaluation."""

    epoch: int
    scalars: Mapping[str, float]
    results: Mapping[str, Evaluation]
    epoch_time: float
    pictures: Mapping[str, Any] = field(default_factory=dict)  # model -> its error gallery (a PIL image)


class Logger(Protocol):
    """A logger backend. One with a store to ask may also have ``check(sweep_dir)``, called before
    any data is read, which raises a UserError for what the store says cannot work."""

    name: str

    def open(self, run: RunInfo, resume_after: int) -> None:
        """Start recording; ``resume_after`` is the last epoch already recorded (0 for a new run)."""

    def log_epoch(self, record: EpochRecord) -> None: ...

    def close(self, summary: FitSummary | None) -> None:
        """Finish: ``summary`` of the fit, or None when the run stopped early on a signal or error."""


class Loggers:
    """Every configured backend, each called in turn; one that fails is dropped with a warning."""

    def __init__(self, backends: Sequence[Logger]) -> None:
        self.backends = list(backends)
        self.dropped: dict[str, str] = {}  # backend -> when and why it went off
        self.at = "opening"  # what the backends are doing: opening, epoch N, closing

    def call(self, method: str, *args: Any) -> None:
        for backend in list(self.backends):
            try:
                getattr(backend, method)(*args)
            except Exception as err:  # a logger must never stop training or touch its checkpoints
                reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                log.warning(
                    "Logger %s failed (%s) and is off for the rest of this run; training goes on.",
                    backend.name,
                    reason,
                )
                self.backends.remove(backend)
                self.dropped[backend.name] = f"{self.at} ({reason})"

    def open(self, run: RunInfo, resume_after: int) -> None:
        self.call("open", run, resume_after)

    def log_epoch(self, record: EpochRecord) -> None:
        self.at = f"epoch {record.epoch}"
        self.call("log_epoch", record)

    def close(self, summary: FitSummary | None) -> None:
        self.at = "closing"
        self.call("close", summary)
        for name, when in self.dropped.items():  # said again at the end, where a user reads the outcome
            log.warning("Logger %s went off at %s: its record of this run is incomplete.", name, when)


def attach_files(backends: Sequence[Logger], paths: Sequence[Path]) -> None:
    """Files written after the fit (metrics.json, per_class.csv, report.html) given to the backends
    that keep files (``attach``); one that cannot is said in a warning, and the run stays done."""
    for backend in backends:
        attach = getattr(backend, "attach", None)
        if attach is None:
            continue
        try:
            attach(paths)
        except Exception as err:  # a server gone, a full disk: the run's own files are written
            log.warning(
                "Logger %s could not add the run's end files (%s: %s).", backend.name, type(err).__name__, err
            )
