"""How far a run has come: completed epochs, optimizer updates, the best monitored value and the
epochs without improvement (early stopping), and what ``Trainer.fit`` returns (``FitSummary``).
A checkpoint keeps the progress, so a resumed run continues its best metric and its patience."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from trainer.config import EarlyStoppingConfig
from trainer.evaluation.metrics import Evaluation


@dataclass(frozen=True)
class FitSummary:
    """What ``Trainer.fit`` returns: the best monitored value and the last epoch's metrics."""

    final: dict[str, Evaluation] | None  # the last epoch's results per prefix (val, val_ema)
    best: dict[str, Evaluation] | None  # the best epoch's, when this process trained it
    best_metric: float | None
    best_epoch: int | None
    monitor: str
    epoch: int  # the last completed epoch
    class_names: list[str]
    class_counts: list[int]
    stopped_early: str | None = None  # why training stopped before trainer.epochs, if it did
    test: Evaluation | None = None  # best.pt on the held-out test split, evaluated once at the end

    def with_test(self, test: Evaluation) -> FitSummary:
        return dataclasses.replace(self, test=test)


def is_better(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if mode == "max" else value < best


@dataclass
class Progress:
    """How far a run has come: completed epochs, optimizer updates, the best monitored value."""

    epoch: int = 0
    num_updates: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    stale_epochs: int = 0  # epochs since the monitored value last beat its best by more than min_delta

    def note_best(self, epoch: int, value: float, mode: str, min_delta: float = 0.0) -> bool:
        """Whether epoch ``epoch``'s monitored ``value`` is a new best (then kept); counts the
        epochs without an improvement larger than ``min_delta`` (for early stopping)."""
        best = self.best_metric
        margin = min_delta if mode == "max" else -min_delta
        significant = best is None or math.isnan(best) or is_better(value, best + margin, mode)
        self.stale_epochs = 0 if significant else self.stale_epochs + 1
        improved = is_better(value, best, mode)
        if improved:
            self.best_metric, self.best_epoch = value, epoch
        return improved


def early_stop_reason(progress: Progress, rule: EarlyStoppingConfig, monitor: str, epochs: int) -> str | None:
    """Why the run stops before ``epochs``, or None to go on. It reads only the progress a
    checkpoint keeps, so a resumed run that had stopped does not train on (unless the rule changed)."""
    if rule.patience is None or progress.stale_epochs < rule.patience or progress.epoch >= epochs:
        return None
    return (
        f"after epoch {progress.epoch}, {monitor} has not improved by more than {rule.min_delta:g} for "
        f"{progress.stale_epochs} epochs (trainer.early_stopping.patience={rule.patience}); best "
        f"{progress.best_metric:.4f} at epoch {progress.best_epoch}, kept in best.pt"
    )
