"""The held-out test split: evaluated once, after training, with the weights of best.pt.

Choosing the epoch (best.pt, early stopping) on the images that are then reported overstates
accuracy: the maximum over epochs of a noisy number is biased upward, more so the fewer images
a class has. So a test split (``dataset.test_dir``, or test rows of a label file) never takes
part in training or selection: nothing reads it until the run has ended, and then the checkpoint
the run chose is evaluated on it once, its numbers written beside the validation ones.
"""

from __future__ import annotations

import logging

from trainer.checkpoint import load_checkpoint
from trainer.evaluation.metrics import Evaluation, evaluate_model
from trainer.progress import FitSummary
from trainer.trainer import Trainer

log = logging.getLogger("train")


def monitored_prefix(monitor: str) -> str:
    """The results ``trainer.monitor`` chose from: ``val`` (the model) or ``val_ema``."""
    return "val_ema" if monitor.startswith("val_ema/") else "val"


def evaluate_best(trainer: Trainer, loader: object) -> Evaluation:
    """best.pt's monitored weights (the model's, or the EMA's for ``val_ema/...``) on ``loader``.

    Every rank reads best.pt (rank 0 wrote it before the end-of-training barrier) and evaluates its
    share; the metrics are summed across ranks as in validation."""
    state = load_checkpoint(trainer.checkpointer.folder / "best.pt", key="best.pt")
    if monitored_prefix(trainer.config.monitor) == "val_ema" and trainer.model_ema is not None:
        trainer.model_ema.module.load_state_dict(state["ema"])
        model = trainer.model_ema.module
    else:
        trainer.raw_model.load_state_dict(state["model"])
        model = trainer.model
    channels_last = trainer.config.channels_last
    return evaluate_model(model, loader, trainer.metrics, trainer.device, trainer.amp_dtype, channels_last)


def test_best(trainer: Trainer, loader: object, summary: FitSummary) -> FitSummary:
    """``summary`` with the test results of best.pt; unchanged when no epoch was ever best."""
    if summary.best_epoch is None:
        log.info("No best epoch yet: the test split is not evaluated.")
        return summary
    return summary.with_test(evaluate_best(trainer, loader))
