"""A loud warning when a run's predictions have collapsed.

A collapsed classifier puts out one class for every validation image, or the same score for
every class (its validation cross-entropy then sits at ln C). Accuracy may still look like
something (the share of the predicted class), so without a word a user can train for hours on
a dead run. The check runs on the validation results the Trainer computes anyway: it fires
when two epochs in a row are collapsed (the first epoch of a heavily imbalanced run may
legitimately predict the head class everywhere), or at the last epoch of a run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from trainer.evaluation.metrics import Evaluation

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
