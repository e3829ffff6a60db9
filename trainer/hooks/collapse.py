"""A loud warning, once per run, when the raw model's predictions have collapsed (what counts as
collapsed: ``trainer.evaluation.collapse``): two collapsed epochs in a row, or a collapsed last
epoch (the first epoch of a heavily imbalanced run may legitimately predict the head class
everywhere). The advice names the loss's own remedy first (``collapse_advice`` of losses.base).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from trainer.evaluation.collapse import advice, collapse_symptom
from trainer.evaluation.metrics import Evaluation
from trainer.hooks.base import EpochEnd, Hook

log = logging.getLogger("trainer.evaluation.collapse")


class CollapseWatch(Hook):
    """Warns once per run when the raw model's predictions stay collapsed."""

    def __init__(self, class_names: Sequence[str], epochs: int, loss_advice: str | None = None) -> None:
        self.class_names = list(class_names)
        self.epochs, self.loss_advice = epochs, loss_advice
        self.previous: str | None = None
        self.warned = False

    def check(self, epoch: int, results: Evaluation, loss_advice: str | None = None) -> bool:
        """Warn if collapsed now and at the previous epoch (or now, at the last epoch); True if warned."""
        symptom = collapse_symptom(results, self.class_names)
        fire = symptom is not None and (self.previous is not None or epoch >= self.epochs)
        self.previous = symptom
        if not fire or self.warned:
            return False
        self.warned = True
        log.warning(
            "PREDICTIONS COLLAPSED at epoch %d: %s. The model has stopped telling classes apart and "
            "more epochs rarely bring it back. Try: %s. The run goes on.",
            epoch,
            symptom,
            advice(loss_advice),
        )
        return True

    def on_validation_end(self, end: EpochEnd) -> None:
        if end.main:
            self.check(end.epoch, end.results["val"], self.loss_advice)
