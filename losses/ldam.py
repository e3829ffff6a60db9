"""LDAM: the label-distribution-aware margin loss (Cao et al., NeurIPS 2019, "Learning
Imbalanced Datasets with Label-Distribution-Aware Margin Loss").

Each class j gets a margin m_j = max_m * n_j^(-1/4) / max_k n_k^(-1/4) (n_j: its training
images), so the rarest class gets ``max_m``. The paper subtracts m_y from the true-class cosine
and multiplies by s before cross-entropy. Here the model's cosine head already multiplies by s
(``model.cosine_scale``, so that the model's output is the logits whose softmax is its
probability), and the loss subtracts the margin in logit units: cross-entropy of
z - s * m_y on the true class, which is the paper's s * (cos - m_y). ``s`` is the scale of the
logits the loss receives: build_parts passes the head's ``cosine_scale`` (1 for a linear head).

Soft targets t (N, C) from Mixup/CutMix or label smoothing: the paper defines LDAM for hard
labels only. Here each class's logit loses its margin in proportion to its target mass,
z - s * t * m (element-wise), and goes into the soft-target cross-entropy
    sum_i sum_c -t_ic w_c log softmax(.)_ic  /  sum_i sum_c t_ic w_c.
A one-hot t is then exactly the loss of its class index, with or without class weights (the
weighted mean divides by the sum of the targets' weights, as ``F.cross_entropy`` does). A
mixed image of classes a and b (t_a = lam, t_b = 1 - lam) is the lam-weighted sum of two LDAM
terms whose margins shrink with their share, so a barely-present class is not pushed by a
full margin. Unlike interpolating two hard-label losses, every sample is one softmax over
one set of margined logits, so the loss stays a proper cross-entropy of the mixed target.

The pasted loss this replaces never applied the margin (its true-class mask stayed all zero),
hard-coded the batch size, ran only on CUDA, and flattened soft targets; see tests/test_losses.py.
Computed in float32, also under autocast; margins and weights are buffers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from losses.base import ImbalancedLoss
from losses.cross_entropy import soft_cross_entropy
from losses.weights import WeightSpec


def ldam_margins(cls_num_list: Sequence[int], max_m: float) -> torch.Tensor:
    """m_j = max_m * n_j^(-1/4) / max_k n_k^(-1/4): shape (C,), float32."""
    counts = torch.as_tensor(cls_num_list, dtype=torch.float64)
    if counts.numel() == 0 or bool((counts <= 0).any()):
        raise ValueError(f"every class needs at least one training image, got counts {list(cls_num_list)}")
    margins = counts.pow(-0.25)
    return (margins * (max_m / margins.max())).float()


class LDAMLoss(ImbalancedLoss):
    """LDAM with optional class weights (fixed, or deferred to ``drw_epoch``: LDAM-DRW)."""

    collapse_advice = "a smaller cosine-head scale (model.cosine_scale=10) or model.head=linear"

    def __init__(
        self,
        cls_num_list: Sequence[int],
        max_m: float = 0.5,
        s: float = 1.0,
        weight: WeightSpec = None,
        drw_epoch: int | None = None,
        beta: float = 0.9999,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(weight, cls_num_list, drw_epoch, beta, label_smoothing, key="loss.weight")
        if not max_m >= 0:
            raise ValueError(f"loss.max_m={max_m} must be >= 0 (0.5 in the paper)")
        if not s > 0:
            raise ValueError(f"the logit scale s={s} must be > 0 (model.cosine_scale, 30 in the paper)")
        self.register_buffer("margins", ldam_margins(cls_num_list, max_m))
        self.s = s

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == 1:
            margin = self.margins[target]  # (N,)
            z = logits.scatter_add(1, target[:, None], -self.s * margin[:, None])  # true class only
            return F.cross_entropy(z, target, weight=self.weight)
        z = logits - self.s * target * self.margins  # (N, C)
        return soft_cross_entropy(z, target, self.weight)
