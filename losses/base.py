"""What every loss of this package shares: class weights, their deferred switch, target handling.

Targets are class indices (N,) or probabilities (N, C) (Mixup/CutMix, label smoothing).
Label smoothing (Szegedy et al., CVPR 2016) turns index targets into (1 - eps) one-hot +
eps / C; targets that already are probabilities are taken as they are. Class weights are
None, 'balanced' (effective number of samples, Cui et al., CVPR 2019) or one per class;
with ``drw_epoch`` they switch on from that epoch only (deferred re-weighting, Cao et al.,
NeurIPS 2019), the balanced ones if none are given. Weights are a buffer, so they follow
``.to()``, DataParallel replicas and state_dict.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from losses.weights import WeightSpec, resolve_weights


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


class ImbalancedLoss(nn.Module):
    """Base of our losses: per-class weights (optionally deferred to ``drw_epoch``), label smoothing."""

    def __init__(
        self,
        weight: WeightSpec,
        cls_num_list: Sequence[int] | None,
        drw_epoch: int | None,
        beta: float,
        label_smoothing: float,
        key: str,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"loss.label_smoothing={label_smoothing} must lie in [0, 1)")
        self.label_smoothing = label_smoothing
        if drw_epoch is not None and drw_epoch < 1:
            raise ValueError(f"loss.drw_epoch={drw_epoch}: epochs count from 1; use null for no DRW")
        weights = resolve_weights(weight, cls_num_list, beta, key)
        if drw_epoch is not None and weights is None:
            weights = resolve_weights("balanced", cls_num_list, beta, "loss.drw_epoch")
        self.drw_epoch = drw_epoch
        self.reweighting = weights is not None and drw_epoch is None
        self.register_buffer("class_weight", weights, persistent=True)

    # what to try first when a run with this loss collapses (the collapse warning's advice)
    collapse_advice: str | None = None

    def set_epoch(self, epoch: int) -> str | None:
        """The loop's hook at the start of each epoch (counted from 1), for a loss that changes
        during training: the deferred weights switch on from ``drw_epoch`` on. Returns what changed
        at this epoch, in words for the log, or None."""
        if self.drw_epoch is None:
            return None
        self.reweighting = epoch >= self.drw_epoch
        if epoch == self.drw_epoch:
            return f"epoch {epoch}: deferred re-weighting (loss.drw_epoch) switches the class weights on"
        return None

    @property
    def weight(self) -> torch.Tensor | None:
        """The class weights in force now, or None (uniform)."""
        return self.class_weight if self.reweighting else None

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss, computed in float32 whatever the autocast dtype, of prepared targets."""
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return self.loss(*self.prepare(logits, target))

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of float32 ``logits`` (N, C) and ``target``: indices (N,) or probabilities (N, C)."""
        raise NotImplementedError

    def prepare(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 logits, and index targets (N,) when unsmoothed, else probabilities (N, C)."""
        logits = logits.float()
        if not check_target(logits, target):
            return logits, target.float()
        if self.label_smoothing == 0.0:
            return logits, target
        return logits, soft_targets(target, logits.shape[1], self.label_smoothing)
