"""Class-balanced sampling: every class is drawn equally often, whatever its size.

Sample i of class c gets weight 1 / n_c and ``len(dataset)`` indices are drawn with replacement
per epoch, so an epoch has the usual length while each class fills about 1/C of it (the
"class-balanced sampling" baseline of Kang et al., ICLR 2020, "Decoupling Representation and
Classifier for Long-Tailed Recognition"). Draws come from the loader's generator, so they are
reproducible from the seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import WeightedRandomSampler


def class_balanced_weights(targets: Sequence[int]) -> torch.Tensor:
    """Per-sample weights 1 / n_c for samples of class c: shape (len(targets),)."""
    labels = torch.as_tensor(targets, dtype=torch.long)
    counts = torch.bincount(labels).double()
    return 1.0 / counts[labels]


def class_balanced_sampler(targets: Sequence[int], generator: torch.Generator) -> WeightedRandomSampler:
    """A sampler drawing ``len(targets)`` indices per epoch with equal probability for each class."""
    weights = class_balanced_weights(targets)
    return WeightedRandomSampler(weights, num_samples=len(weights), replacement=True, generator=generator)
