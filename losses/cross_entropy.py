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

from losses.weights import ClassWeightedLoss, WeightSpec


def check_target(logits: torch.Tensor, target: torch.Tensor) -> bool:
    """Validate shapes; True for index targets (N,), False for probability targets (N, C)."""
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, C), got shape {tuple(logits.shape)}")
    if target.ndim == 1 and not target.is_floating_point():
        if target.shape[0] != logits.shape[0]:
            raise ValueError(f"{target.shape[0]} targets for {logits.shape[0]} logits")
        return True
    if target.shape != logits.shape:
        raise ValueError(
            f"target must be class indices (N,) or probabilities (N, C); got {tuple(target.shape)} "
            f"for logits {tuple(logits.shape)}"
        )
    return False


def soft_targets(target: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """Index targets (N,) -> smoothed one-hot probabilities (N, C), float32."""
    one_hot = F.one_hot(target, num_classes).float()
    return one_hot * (1.0 - smoothing) + smoothing / num_classes


def soft_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted cross-entropy of probability targets, normalised by the total target weight."""
    log_p = F.log_softmax(logits.float(), dim=-1)  # (N, C)
    t = target.float() if weight is None else target.float() * weight  # (N, C)
    return -(t * log_p).sum() / t.sum()


class CrossEntropyLoss(ClassWeightedLoss):
    """Cross-entropy with optional class weights (fixed or deferred), label smoothing, soft targets."""

    def __init__(
        self,
        cls_num_list: Sequence[int] | None = None,
        class_weights: WeightSpec = None,
        label_smoothing: float = 0.0,
        drw_epoch: int | None = None,
        beta: float = 0.9999,
    ) -> None:
        super().__init__(class_weights, cls_num_list, drw_epoch, beta, key="loss.class_weights")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"loss.label_smoothing={label_smoothing} must lie in [0, 1)")
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits = logits.float()
            if check_target(logits, target):
                if self.label_smoothing == 0.0:
                    return F.cross_entropy(logits, target, weight=self.weight)
                target = soft_targets(target, logits.shape[1], self.label_smoothing)
            return soft_cross_entropy(logits, target, self.weight)
