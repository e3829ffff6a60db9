"""The optimizer and its learning-rate schedule for a model on its device, from the factories
``trainer.build`` made of the ``optimizer`` and ``scheduler`` groups; and timm's layer-wise
learning-rate decay (``optimizer.layer_decay``): its parameter groups carry an ``lr_scale`` that
timm's schedulers apply at every step, and without a schedule it is applied here.

Where torch has fused kernels for the optimizer on the model's device (Adam, AdamW, SGD, Adagrad
on CPU and CUDA), the optimizer timm built is re-made with ``fused=True``, same groups and
settings: one kernel updates every parameter instead of a loop over them (AdamW's update of
convnextv2_atto took 18 ms on two CPU cores, 5 ms fused). The update is the same up to float
rounding."""

from __future__ import annotations

import inspect
import logging

from timm.scheduler.scheduler import Scheduler
from torch import nn
from torch.optim import Optimizer

from trainer.config import TrainerConfig
from trainer.parts import TrainingParts

log = logging.getLogger("trainer.trainer")


def apply_layer_decay(optimizer: Optimizer, scheduled: bool, say: bool) -> None:
    """timm's layer-wise lr decay gives each parameter group an ``lr_scale``, which timm's
    schedulers apply at every step; without a schedule it is applied here, once. ``say`` logs
    the range of the scales."""
    scales = [group.get("lr_scale", 1.0) for group in optimizer.param_groups]
    if min(scales) == max(scales) == 1.0:
        return
    if not scheduled:
        for group, scale in zip(optimizer.param_groups, scales, strict=True):
            group["lr"] *= scale
    if say:
        log.info(
            "Layer-wise lr decay: %d parameter groups, lr x%.3g for the first layers to x%.3g for the head",
            len(scales),
            min(scales),
            max(scales),
        )


def fused(optimizer: Optimizer) -> Optimizer:
    """``optimizer`` re-made with torch's fused kernels where it has them for these parameters;
    else ``optimizer`` itself (another class, a device without the kernels, ``foreach`` asked for)."""
    if "fused" not in optimizer.defaults or optimizer.defaults["fused"] or optimizer.defaults.get("foreach"):
        return optimizer
    chosen = ("fused", "foreach")
    groups = [{k: v for k, v in group.items() if k not in chosen} for group in optimizer.param_groups]
    accepted = inspect.signature(type(optimizer)).parameters  # AdamW's defaults hold one it sets itself
    settings = {k: v for k, v in optimizer.defaults.items() if k in accepted and k not in chosen}
    try:
        return type(optimizer)(groups, **settings, fused=True)
    except (RuntimeError, TypeError, ValueError):  # e.g. no fused kernel for this device or dtype
        return optimizer


def create_optimization(
    model: nn.Module, parts: TrainingParts, config: TrainerConfig, say: bool
) -> tuple[Optimizer, Scheduler | None]:
    """The optimizer of ``model``'s parameters and its schedule over ``config.epochs`` (None without
    one), stepped once per optimizer update."""
    optimizer = fused(parts.optimizer_factory(model))
    lr_scheduler = None
    if parts.scheduler_factory is not None:
        updates = -(-len(parts.train_loader) // config.accumulate_steps)  # a short last group updates too
        lr_scheduler, _ = parts.scheduler_factory(
            optimizer, num_epochs=config.epochs, updates_per_epoch=updates
        )
    apply_layer_decay(optimizer, scheduled=lr_scheduler is not None, say=say)
    return optimizer, lr_scheduler
