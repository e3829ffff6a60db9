"""Class weights for imbalanced data and their deferred schedule.

Class-balanced weights by the effective number of samples (Cui et al., CVPR 2019,
"Class-Balanced Loss Based on Effective Number of Samples"): w_c is proportional to
(1 - beta) / (1 - beta^n_c), normalised to sum to the number of classes C. beta -> 0 gives
uniform weights, beta -> 1 inverse class frequency.

Deferred re-weighting (DRW; Cao et al., NeurIPS 2019, "Learning Imbalanced Datasets with
Label-Distribution-Aware Margin Loss"): train with uniform weights first and switch the class
weights on from epoch ``drw_epoch`` (epochs count from 1), once the features are learnt.
``ClassWeightedLoss`` holds the weights and the switch for every loss of this package.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

WeightSpec = str | Sequence[float] | torch.Tensor | None


def effective_number_weights(cls_num_list: Sequence[int], beta: float = 0.9999) -> torch.Tensor:
    """(1 - beta) / (1 - beta^n_c), normalised to sum to C: shape (C,), float32."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta={beta} must lie in [0, 1)")
    counts = torch.as_tensor(cls_num_list, dtype=torch.float64)
    if counts.numel() == 0 or bool((counts <= 0).any()):
        raise ValueError(f"every class needs at least one training image, got counts {list(cls_num_list)}")
    weights = (1.0 - beta) / (1.0 - torch.pow(beta, counts))
    return (weights / weights.sum() * len(counts)).float()


def resolve_weights(
    spec: WeightSpec, cls_num_list: Sequence[int] | None, beta: float, key: str
) -> torch.Tensor | None:
    """Turn a config value (None, 'balanced', or one weight per class) into a (C,) tensor or None."""
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec != "balanced":
            raise ValueError(f"{key}={spec!r}: use null, 'balanced' or a list of one weight per class")
        if cls_num_list is None:
            raise ValueError(f"{key}='balanced' needs the per-class training counts (cls_num_list)")
        return effective_number_weights(cls_num_list, beta)
    weights = torch.as_tensor(spec, dtype=torch.float32).flatten()
    if cls_num_list is not None and len(weights) != len(cls_num_list):
        raise ValueError(f"{key} has {len(weights)} weights for {len(cls_num_list)} classes")
    if bool((weights < 0).any()) or not bool(torch.isfinite(weights).all()):
        raise ValueError(f"{key} must hold finite, non-negative weights, got {weights.tolist()}")
    return weights


class ClassWeightedLoss(nn.Module):
    """Base of our losses: optional per-class weights, optionally deferred until ``drw_epoch``.

    With ``drw_epoch`` set and no explicit weights, the deferred weights are the class-balanced
    ones. The weights are a buffer, so they follow ``.to()``, DataParallel replicas and state_dict.
    """

    def __init__(
        self,
        weight: WeightSpec,
        cls_num_list: Sequence[int] | None,
        drw_epoch: int | None,
        beta: float,
        key: str,
    ) -> None:
        super().__init__()
        if drw_epoch is not None and drw_epoch < 1:
            raise ValueError(f"loss.drw_epoch={drw_epoch}: epochs count from 1; use null for no DRW")
        weights = resolve_weights(weight, cls_num_list, beta, key)
        if drw_epoch is not None and weights is None:
            weights = resolve_weights("balanced", cls_num_list, beta, "loss.drw_epoch")
        self.drw_epoch = drw_epoch
        self.reweighting = weights is not None and drw_epoch is None
        self.register_buffer("class_weight", weights, persistent=True)

    def set_epoch(self, epoch: int) -> None:
        """Switch the deferred weights on from ``drw_epoch`` on (epochs count from 1)."""
        if self.drw_epoch is not None:
            self.reweighting = epoch >= self.drw_epoch

    @property
    def weight(self) -> torch.Tensor | None:
        """The class weights in force now, or None (uniform)."""
        return self.class_weight if self.reweighting else None
