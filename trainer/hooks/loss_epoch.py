"""The loss's own epoch switch: deferred re-weighting (DRW; Cao et al., NeurIPS 2019, "Learning
Imbalanced Datasets with Label-Distribution-Aware Margin Loss") turns class-balanced weights on
at ``loss.drw_epoch``. The loss decides (``losses.base.ImbalancedLoss.set_epoch``); this hook
tells it the epoch and says what changed.
"""

from __future__ import annotations

import logging

from losses.base import ImbalancedLoss
from trainer.hooks.base import Hook

log = logging.getLogger("trainer.trainer")


class LossEpoch(Hook):
    """Tells ``criterion`` each epoch before it trains."""

    def __init__(self, criterion: ImbalancedLoss) -> None:
        self.criterion = criterion

    def on_epoch_start(self, epoch: int, say: bool) -> None:
        change = self.criterion.set_epoch(epoch)
        if change and say:
            log.info("%s", change)
