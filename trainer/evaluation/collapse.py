"""A loud warning when a run's predictions have collapsed.

A collapsed classifier puts out one class for every validation image, or the same score for
every class (its validation cross-entropy then sits at ln C). Accuracy may still look like
something (the share of the predicted class), so without a word a user can train for hours on
a dead run. The check runs on the validation results the Trainer computes anyway: it fires
when two epochs in a row are collapsed (the first epoch of a heavily imbalanced run may
legitimately predict the head class everywhere), or at the last epoch of a run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from trainer.evaluation.metrics import Evaluation

log = logging.getLogger(__name__)

# |val loss - ln C| below this: the scores no longer depend on the class
FLAT_LOSS_TOLERANCE = 1e-3


def collapse_symptom(results: Evaluation, class_names: Sequence[str]) -> str | None:
    """What is collapsed about one validation's results, or None for a healthy one."""
    predicted = results.matrix().sum(axis=0).tolist()  # images predicted as each class
    total = sum(predicted)
    ln_c = math.log(len(class_names))
    if abs(results.loss - ln_c) < FLAT_LOSS_TOLERANCE:
        loss = results.loss
        return f"the validation loss is {loss:.4f} = ln {len(class_names)}: every class gets the same score"
    if total and max(predicted) == total and len(class_names) > 1:
        return f"every validation image is predicted as class {class_names[predicted.index(total)]!r}"
    return None


def advice(loss_advice: str | None) -> str:
    """What to try: the loss's own advice (``collapse_advice`` of losses.base), then the general."""
    tips = [
        "lower optimizer.lr (e.g. by 10x)",
        "milder augmentation for small images (dataset.scale=[0.35,1.0] dataset.color_jitter=0.0)",
    ]
    return "; ".join([loss_advice, *tips] if loss_advice else tips)


class CollapseWatch:
    """Warns once per run when the raw model's predictions stay collapsed."""

    def __init__(self, class_names: Sequence[str], epochs: int) -> None:
        self.class_names = list(class_names)
        self.epochs = epochs
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
