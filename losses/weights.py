"""Class weights for imbalanced data and their deferred schedule.

Class-balanced weights by the effective number of samples (Cui et al., CVPR 2019,
"Class-Balanced Loss Based on Effective Number of Samples"): w_c is proportional to
(1 - beta) / (1 - beta^n_c), normalised to sum to the number of classes C. beta -> 0 gives
uniform weights, beta -> 1 inverse class frequency.

Deferred re-weighting (DRW; Cao et al., NeurIPS 2019, "Learning Imbalanced Datasets with
Label-Distribution-Aware Margin Loss") switches such weights on late in training; the switch
lives in ``losses.base.ImbalancedLoss``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

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
