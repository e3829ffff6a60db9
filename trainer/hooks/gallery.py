"""``trainer.gallery_every``: the error gallery (``trainer.evaluation.gallery``) of the model that
``trainer.monitor`` reads, every ``every`` epochs and at the last; and at the end of training the
gallery of the epoch best.pt holds, so that the report and TensorBoard show the mistakes of the
weights they present.

While that model is validated, each image's prediction is kept on the device (summed over DDP
ranks; a few numbers an image). After validation rank 0 draws the picture of a gallery epoch,
which the run logger saves as ``RUN/galleries/<model>_epoch<N>.png`` and hands to the logger
backends; the predictions of the best epoch so far are kept, and drawn once training ends
(``RUN/galleries/<model>_best.png``). A resumed run whose best epoch was trained before the resume
has no best gallery of its own: the report then shows the last gallery drawn, and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from trainer.evaluation.gallery import Predictions, gallery_picture, gallery_title
from trainer.hooks.base import EpochEnd, Hook

Synced = tuple[np.ndarray, np.ndarray, np.ndarray]


class ErrorGallery(Hook):
    """The gallery of ``prefix`` (``val`` or ``val_ema``) over ``samples``, the validation images."""

    def __init__(
        self,
        every: int,
        epochs: int,
        prefix: str,
        samples: Sequence[tuple[str, int]],
        class_names: Sequence[str],
    ) -> None:
        self.every, self.epochs, self.prefix = every, epochs, prefix
        self.samples, self.class_names = samples, list(class_names)
        self.watch: Predictions | None = None
        self.best: tuple[int, Synced] | None = None  # the best epoch's predictions, this process's run

    def due(self, epoch: int) -> bool:
        return self.every > 0 and (epoch % self.every == 0 or epoch == self.epochs)

    def watch_validation(
        self, prefix: str, epoch: int, size: int, device: torch.device
    ) -> Predictions | None:
        if prefix != self.prefix:
            return None
        self.watch = Predictions(size, device)  # every epoch: any may become the best
        return self.watch

    def on_validation_end(self, end: EpochEnd) -> None:
        watch, self.watch = self.watch, None
        if watch is None:
            return
        synced = watch.synced()  # every rank: the predictions are summed across them
        if end.improved:
            self.best = (end.epoch, synced)
        if end.main and self.due(end.epoch):
            title = gallery_title(self.prefix, end.epoch)
            end.pictures[self.prefix] = gallery_picture(synced, self.samples, self.class_names, title)

    def on_fit_end(self, best_epoch: int | None, main: bool) -> dict[str, Any]:
        if not main or self.best is None or self.best[0] != best_epoch:
            return {}
        epoch, synced = self.best
        title = f"best.pt: {gallery_title(self.prefix, epoch)}"
        return {self.prefix: gallery_picture(synced, self.samples, self.class_names, title)}
