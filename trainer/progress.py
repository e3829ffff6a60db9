"""How far a run has come: completed epochs, optimizer updates, the best monitored value and the
epochs without improvement (for ``trainer.hooks.early_stopping``). A checkpoint keeps the
progress, so a resumed run continues its best metric and its patience."""

from __future__ import annotations

import math
from dataclasses import dataclass


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
