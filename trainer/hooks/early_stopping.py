"""``trainer.early_stopping``: stop once ``trainer.monitor`` has not improved by more than
``min_delta`` for ``patience`` epochs.

It reads only the progress a checkpoint keeps (the epochs without a significant improvement are
counted by ``trainer.progress.Progress.note_best``), so a resumed run that had stopped does not
train on, unless the rule changed.
"""

from __future__ import annotations

from trainer.config import EarlyStoppingConfig
from trainer.hooks.base import Hook
from trainer.progress import Progress


def early_stop_reason(progress: Progress, rule: EarlyStoppingConfig, monitor: str, epochs: int) -> str | None:
    """Why the run stops before ``epochs``, or None to go on."""
    if rule.patience is None or progress.stale_epochs < rule.patience or progress.epoch >= epochs:
        return None
    return (
        f"after epoch {progress.epoch}, {monitor} has not improved by more than {rule.min_delta:g} for "
        f"{progress.stale_epochs} epochs (trainer.early_stopping.patience={rule.patience}); best "
        f"{progress.best_metric:.4f} at epoch {progress.best_epoch}, kept in best.pt"
    )


class EarlyStopping(Hook):
    """Stops a run whose monitored metric went ``rule.patience`` epochs without improving."""

    def __init__(self, rule: EarlyStoppingConfig, monitor: str, epochs: int) -> None:
        self.rule, self.monitor, self.epochs = rule, monitor, epochs

    def stop_reason(self, progress: Progress) -> str | None:
        return early_stop_reason(progress, self.rule, self.monitor, self.epochs)
