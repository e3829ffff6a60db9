"""The exponential moving average of the weights: timm's ModelEmaV3, created as configured and
updated every ``trainer.ema.every_steps`` optimizer steps with the decay of the steps it stands for."""

from __future__ import annotations

import logging
import math

from timm.utils import ModelEmaV3
from torch import nn

from trainer.config import EMAConfig

log = logging.getLogger("trainer.trainer")


def create_ema(model: nn.Module, config: EMAConfig, say: bool) -> ModelEmaV3 | None:
    """timm's EMA of ``model``'s weights as configured (None when off); ``say`` logs it once."""
    if not config.enabled:
        return None
    if say:
        warmup = ", warmed up as 1 - (1 + update)^(-2/3) (trainer.ema.warmup)" if config.warmup else ""
        log.info("EMA of the weights (val_ema): decay %g%s", config.decay, warmup)
    return ModelEmaV3(model, decay=config.decay, use_warmup=config.warmup)


def update_ema(ema: ModelEmaV3, model: nn.Module, step: int, every: int) -> None:
    """timm's EMA update for update ``step``, made every ``every`` steps only: then with the decay
    of the ``every`` single steps it stands for (the product of timm's decays, warm-up included;
    ``decay ** every`` once warmed up), which for weights that stay put gives exactly what the
    single updates would, at 1/``every`` of the cost."""
    if every == 1:
        ema.update(model, step=step)
    elif step % every == 0:
        ema.apply_update_(model, math.prod(ema.get_decay(s) for s in range(step - every + 1, step + 1)))
