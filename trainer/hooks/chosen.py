"""Which of the loop's optional behaviours a run gets, from its settings (``trainer``, ``model``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from common.dist import Dist
from losses.base import ImbalancedLoss
from models.factory import classifier_names
from trainer.config import TrainerConfig
from trainer.hooks.base import Hook
from trainer.hooks.collapse import CollapseWatch
from trainer.hooks.early_stopping import EarlyStopping
from trainer.hooks.freeze import BackboneFreeze
from trainer.hooks.gallery import ErrorGallery
from trainer.hooks.loss_epoch import LossEpoch
from trainer.hooks.max_norm import MaxNorm
from trainer.hooks.ranks import RanksAgree
from trainer.results import monitored_model

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from data.loaders import ImageData


def choose_hooks(
    net: nn.Module,
    criterion: nn.Module,
    data: ImageData,
    trainer: TrainerConfig,
    model: DictConfig,
    dist: Dist,
) -> list[Hook]:
    """The loop's optional behaviours that the settings turn on, in the order the loop calls them."""
    names, epochs, monitor = data.class_names, trainer.epochs, trainer.monitor
    say = dist.is_main
    classifier = classifier_names(net)
    hooks: list[Hook] = []
    if model.get("freeze_backbone_epochs"):
        hooks.append(BackboneFreeze(net, classifier, model.freeze_backbone_epochs))
    if model.get("max_norm") is not None:
        hooks.append(MaxNorm(net, classifier, model.max_norm, model.get("max_norm_relative", False), say))
    if isinstance(criterion, ImbalancedLoss):  # DRW switches on at its epoch
        hooks.append(LossEpoch(criterion))
    if trainer.gallery_every:
        samples = data.val_dataset.samples
        hooks.append(ErrorGallery(trainer.gallery_every, epochs, monitored_model(monitor), samples, names))
    hooks.append(CollapseWatch(names, epochs, getattr(criterion, "collapse_advice", None)))
    if trainer.early_stopping.patience is not None:
        hooks.append(EarlyStopping(trainer.early_stopping, monitor, epochs))
    if dist.enabled:
        hooks.append(RanksAgree(net, dist))
    return hooks
