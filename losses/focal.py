"""Focal loss (Lin et al., ICCV 2017, "Focal Loss for Dense Object Detection"), multi-class,
for hard and soft targets.

Per sample: -sum_c t_c alpha_c (1 - p_c)^gamma log p_c, with log p from log_softmax (stable
for confident predictions); the batch loss is the mean over samples. Index targets are one-hot
t, so gamma = 0 without alpha is exactly cross-entropy. ``alpha`` is None, one weight per
class, or 'balanced': the effective-number weights of Cui et al. (CVPR 2019), which can also
be deferred to ``drw_epoch``. Computed in float32, also under autocast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from losses.base import ImbalancedLoss
from losses.weights import WeightSpec


class FocalLoss(ImbalancedLoss):
    """Focal loss; ``gamma`` focuses on hard examples, ``alpha`` weighs classes."""

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: WeightSpec = None,
        cls_num_list: Sequence[int] | None = None,
        drw_epoch: int | None = None,
        beta: float = 0.9999,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(alpha, cls_num_list, drw_epoch, beta, label_smoothing, key="loss.alpha")
        if gamma < 0:
            raise ValueError(f"loss.gamma={gamma} must be >= 0")
        self.gamma = gamma

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == 1:
            target = F.one_hot(target, logits.shape[1]).float()  # (N, C)
        log_p = F.log_softmax(logits, dim=-1)  # (N, C)
        focus = (1.0 - log_p.exp()).clamp_min(0.0).pow(self.gamma)  # (N, C)
        per_class = target.float() * focus * log_p
        if self.weight is not None:
            per_class = per_class * self.weight
        return -per_class.sum(dim=1).mean()
