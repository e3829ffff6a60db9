"""``model.max_norm``: MaxNorm (Alshammari et al., CVPR 2022, "Long-Tailed Recognition via Weight
Balancing"), each class's classifier row projected back within a cap after every update.

With ``model.max_norm_relative=true`` the cap is the fraction ``model.max_norm`` of the way from
the smallest class row norm of the classifier as it starts (before any resume) to the largest,
as the paper's code computes it for its second stage.
"""

from __future__ import annotations

import logging

from torch import nn

from models.heads import cap_row_norms, relative_cap
from trainer.hooks.base import Hook

log = logging.getLogger("trainer.trainer")


class MaxNorm(Hook):
    """Caps the rows of the classifier modules ``classifier`` of ``model`` at ``cap`` after each update."""

    def __init__(self, model: nn.Module, classifier: tuple[str, ...], cap: float, relative: bool, say: bool):
        self.model, self.classifier = model, classifier
        self.cap = relative_cap(model, classifier, cap) if relative else cap
        if relative and say:
            log.info(
                "MaxNorm: class rows capped at norm %.4g (model.max_norm=%g of the way from the smallest "
                "starting row norm to the largest)",
                self.cap,
                cap,
            )

    def on_update(self) -> None:
        cap_row_norms(self.model, self.classifier, self.cap)
