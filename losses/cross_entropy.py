"""Cross-entropy for hard and soft targets, with class weights, label smoothing and label-aware
smoothing (MiSLAS: per-class smoothing from the class counts, losses/smoothing.py).

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

from losses.base import ImbalancedLoss, check_target
from losses.smoothing import label_aware_epsilons, label_aware_targets
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
        label_aware_smoothing: Sequence[float] | None = None,
        smoothing_shape: str = "concave",
    ) -> None:
        super().__init__(
            class_weights, cls_num_list, drw_epoch, beta, label_smoothing, key="loss.class_weights"
        )
        epsilons = None
        if label_aware_smoothing is not None:  # [head, tail]: MiSLAS's label-aware smoothing
            if len(label_aware_smoothing) != 2 or not cls_num_list:
                raise ValueError(
                    f"loss.label_aware_smoothing={list(label_aware_smoothing)} must be [head, tail], the "
                    f"smoothing of the most and of the least frequent class, e.g. [0.3, 0.0]"
                )
            if label_smoothing:
                raise ValueError("loss.label_smoothing and loss.label_aware_smoothing: set one of them")
            epsilons = label_aware_epsilons(cls_num_list, *label_aware_smoothing, smoothing_shape)
        self.register_buffer("epsilons", epsilons, persistent=False)

    def prepare(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As every loss's; with label-aware smoothing, index targets smoothed by their class's e_y
        (targets that already are probabilities, Mixup's, are taken as they are)."""
        if self.epsilons is not None and check_target(logits, target):
            return logits.float(), label_aware_targets(target, self.epsilons)
        return super().prepare(logits, target)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == 1:
            return F.cross_entropy(logits, target, weight=self.weight)
        return soft_cross_entropy(logits, target, self.weight)
