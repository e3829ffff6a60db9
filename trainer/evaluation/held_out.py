"""The held-out test split: evaluated once, after training, with the weights of best.pt.

Choosing the epoch (best.pt, early stopping) on the images that are then reported overstates
accuracy: the maximum over epochs of a noisy number is biased upward, more so the fewer images
a class has. So a test split (``dataset.test_dir``, or test rows of a label file) never takes
part in training or selection: nothing reads it until the run has ended, and then the checkpoint
the run chose is evaluated on it once (``Trainer.evaluate_best``), its numbers written beside
the validation ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from trainer.evaluation.metrics import Evaluation
from trainer.results import FitSummary

log = logging.getLogger("train")


def test_best(summary: FitSummary, evaluate_best: Callable[[], Evaluation]) -> FitSummary:
    """``summary`` with the test results of best.pt (``evaluate_best()``); unchanged when no epoch
    was ever best."""
    if summary.best_epoch is None:
        log.info("No best epoch yet: the test split is not evaluated.")
        return summary
    return summary.with_test(evaluate_best())
