"""``trainer.gallery_every``: the error gallery (``trainer.evaluation.gallery``) of the model that
``trainer.monitor`` reads, every ``every`` epochs and at the last.

While that model is validated at such an epoch, each image's prediction is kept on the device
(summed over DDP ranks); after validation rank 0 draws the picture, which the run logger saves as
``RUN/galleries/<model>_epoch<N>.png`` and hands to the logger backends.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trainer.evaluation.gallery import Predictions, gallery_picture, gallery_title
from trainer.hooks.base import EpochEnd, Hook


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

    def due(self, epoch: int) -> bool:
        return self.every > 0 and (epoch % self.every == 0 or epoch == self.epochs)

    def watch_validation(
        self, prefix: str, epoch: int, size: int, device: torch.device
    ) -> Predictions | None:
        if prefix == self.prefix and self.due(epoch):
            self.watch = Predictions(size, device)
        return self.watch if prefix == self.prefix else None

    def on_validation_end(self, end: EpochEnd) -> None:
        watch, self.watch = self.watch, None
        if watch is None:
            return
        synced = watch.synced()  # every rank: the predictions are summed across them
        if end.main:
            title = gallery_title(self.prefix, end.epoch)
            end.pictures[self.prefix] = gallery_picture(synced, self.samples, self.class_names, title)
