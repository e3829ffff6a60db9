"""Cross-entropy for hard and soft targets, with class weights and label smoothing.

Targets are either class indices (N,) or probabilities (N, C) as Mixup/CutMix and label
smoothing produce. With class weights w, the soft-target loss is
    sum_i sum_c -t_ic w_c log softmax(z_i)_c  /  sum_i sum_c t_ic w_c,
which for one-hot t is exactly ``F.cross_entropy(z, y, weight=w)`` (its weighted mean divides
by the sum of the targets' weights). Label smoothing (Szegedy et al., CVPR 2016) turns index
targets into (1 - eps) one-hot + eps / C before that; targets that are already probabilities
(Mixup smooths them itself) are taken as they are. Computed in float32, also under autocast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from losses.base import ImbalancedLoss
from losses.weights import WeightSpec


def soft_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted cross-entropy of probability targets, normalised by the total target weight."""
    log_p = F.log_softmax(logits.float(), dim=-1)  # (N, C)
    t = target.float() if weight is None else target.float() * weight  # (N, C)
    return -(t * log_p).sum() / t.sum()


class CrossEntropyLoss(ImbalancedLoss):
    """Cross-entropy with optional class weights (fixed or deferred), label smoothing, soft targets."""

    def __init__(
        self,
        cls_num_list: Sequence[int] | None = None,
        class_weights: WeightSpec = None,
        label_smoothing: float = 0.0,
        drw_epoch: int | None = None,
        beta: float = 0.9999,
    ) -> None:
        super().__init__(
            class_weights, cls_num_list, drw_epoch, beta, label_smoothing, key="loss.class_weights"
        )

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == 1:
            return F.cross_entropy(logits, target, weight=self.weight)
        return soft_cross_entropy(logits, target, self.weight)
