"""``model.freeze_backbone_epochs=K``: the first K epochs train the classifier alone, then all.

A fresh classifier on pretrained features starts with large, random gradients; letting them
into the backbone at once degrades the features it was chosen for. The usual protection (e.g.
"Fine-Tuning can Distort Pretrained Features", Kumar et al., ICLR 2022: linear probe, then fine
tune) is to train the head first. While frozen, the backbone's gradients are dropped before the
optimizer step, so its parameters get no optimizer state, no weight decay and no update (the
EMA, an interpolation towards them, stays equal to them), and its normalisation layers keep
their running statistics (eval mode). Dropping the gradients rather than switching
``requires_grad`` keeps DistributedDataParallel's reducer valid and the optimizer's parameter
groups whole; the price is the backbone's backward pass during the frozen epochs.
"""

from __future__ import annotations

import logging

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from trainer.hooks.base import Hook

log = logging.getLogger("trainer.trainer")


class BackboneFreeze(Hook):
    """The classifier of ``model`` (its modules named ``classifier``) trains alone for ``epochs``."""

    def __init__(self, model: nn.Module, classifier: tuple[str, ...], epochs: int) -> None:
        heads = tuple(f"{name}." for name in classifier)
        self.backbone = [p for name, p in model.named_parameters() if not name.startswith(heads)]
        self.norms = [
            m
            for name, m in model.named_modules()
            if isinstance(m, _BatchNorm) and not f"{name}.".startswith(heads)
        ]
        self.epochs = epochs
        self.frozen = False

    def on_epoch_start(self, epoch: int, say: bool) -> None:
        """Freeze or unfreeze for ``epoch`` (counted from 1); call after ``model.train()``."""
        self.frozen = epoch <= self.epochs
        if self.frozen:
            for norm in self.norms:
                norm.eval()  # running statistics stay as pretrained
        if say and epoch == 1 and self.frozen:
            log.info("Epochs 1-%d train the classifier only (model.freeze_backbone_epochs)", self.epochs)
        elif say and epoch == self.epochs + 1:
            log.info("epoch %d: the backbone unfreezes; every layer trains from now on", epoch)

    def on_gradients(self) -> None:
        """Before the optimizer step: a frozen backbone's gradients go (the step then skips it)."""
        if self.frozen:
            for parameter in self.backbone:
                parameter.grad = None
