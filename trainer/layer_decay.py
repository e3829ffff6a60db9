"""timm's layer-wise learning-rate decay (``optimizer.layer_decay``): its parameter groups carry an
``lr_scale`` that timm's schedulers apply at every step; without a schedule it is applied here."""

from __future__ import annotations

import logging

from torch.optim import Optimizer

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
