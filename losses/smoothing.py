"""Label-aware smoothing (Zhong et al., CVPR 2021, "Improving Calibration for Long-Tailed
Recognition", MiSLAS): more label smoothing for the head classes, less for the tail.

A long-tailed model is over-confident on its frequent classes; smoothing their labels more
counters that. The smoothing of a sample depends on its true class y through the class's
training count n_y, from ``tail`` at the rarest class (n_min) to ``head`` at the most frequent
(n_max), along one of the paper's three shapes of x = (n_y - n_min) / (n_max - n_min):

    concave: tail + (head - tail) * sin(pi x / 2)
    linear:  tail + (head - tail) * x
    convex:  head + (head - tail) * sin(3 pi / 2 + pi x / 2)

(the paper's defaults: concave; 0.3 at the head and 0 at the tail on CIFAR-10-LT). A sample of
class y then trains on (1 - e_y) one-hot(y) + e_y / C.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

SHAPES = ("concave", "linear", "convex")


def label_aware_epsilons(
    counts: Sequence[int], head: float, tail: float, shape: str = "concave"
) -> torch.Tensor:
    """Each class's smoothing e_c, shape (C,)."""
    if shape not in SHAPES:
        raise ValueError(f"loss.smoothing_shape={shape!r} is not one of: {', '.join(SHAPES)}")
    if not (0.0 <= head < 1.0 and 0.0 <= tail < 1.0):
        raise ValueError(f"loss.label_aware_smoothing=[{head}, {tail}]: each must lie in [0, 1)")
    n = torch.as_tensor(counts, dtype=torch.float64)
    spread = (n.max() - n.min()).clamp_min(1e-12)
    x = (n - n.min()) / spread  # 0 at the rarest class, 1 at the most frequent
    if shape == "concave":
        eps = tail + (head - tail) * torch.sin(math.pi * x / 2)
    elif shape == "linear":
        eps = tail + (head - tail) * x
    else:
        eps = head + (head - tail) * torch.sin(1.5 * math.pi + math.pi * x / 2)
    return eps.float()


def label_aware_targets(target: torch.Tensor, epsilons: torch.Tensor) -> torch.Tensor:
    """Index targets (N,) -> (1 - e_y) one-hot + e_y / C, float32 (N, C)."""
    num_classes = epsilons.shape[0]
    eps = epsilons.to(target.device)[target].unsqueeze(1)  # (N, 1)
    one_hot = torch.nn.functional.one_hot(target, num_classes).float()
    return one_hot * (1.0 - eps) + eps / num_classes
