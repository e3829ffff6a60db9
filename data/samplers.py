"""Samplers: class-balanced draws, and each DDP rank's share of an epoch or of the validation set.

Sample i of class c gets weight 1 / n_c and ``len(dataset)`` indices are drawn with replacement
per epoch, so an epoch has the usual length while each class fills about 1/C of it (the
"class-balanced sampling" baseline of Kang et al., ICLR 2020, "Decoupling Representation and
Classifier for Long-Tailed Recognition"). Draws come from the loader's generator, so they are
reproducible from the seed. Under DDP every rank draws the same order from a generator seeded
alike and keeps its strided share (``DistributedShuffle``); validation shards the data without
padding (``ShardSampler``), so every image counts once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler, WeightedRandomSampler

from common.dist import Dist


def class_balanced_weights(targets: Sequence[int]) -> torch.Tensor:
    """Per-sample weights 1 / n_c for samples of class c: shape (len(targets),)."""
    labels = torch.as_tensor(targets, dtype=torch.long)
    counts = torch.bincount(labels).double()
    return 1.0 / counts[labels]


def class_balanced_sampler(targets: Sequence[int], generator: torch.Generator) -> WeightedRandomSampler:
    """A sampler drawing ``len(targets)`` indices per epoch with equal probability for each class."""
    weights = class_balanced_weights(targets)
    return WeightedRandomSampler(weights, num_samples=len(weights), replacement=True, generator=generator)


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th index of ``indices`` from ``rank`` on: disjoint shards, no padding.

    For validation (every image exactly once) and, over a shared shuffled order, for training.
    """

    def __init__(self, indices: Sequence[int] | int, dist: Dist) -> None:
        self.indices = list(range(indices)) if isinstance(indices, int) else list(indices)
        self.dist = dist

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices[self.dist.rank :: self.dist.world_size])

    def __len__(self) -> int:
        return len(range(self.dist.rank, len(self.indices), self.dist.world_size))


class DistributedShuffle(Sampler[int]):
    """This rank's share of one epoch's order, drawn by ``base`` from a generator seeded alike on all ranks.

    ``base`` is a RandomSampler or the class-balanced sampler over the whole dataset; every rank
    draws the same order and keeps its strided share, trimmed so all ranks take equal steps.
    """

    def __init__(self, base: Sampler[int], dist: Dist) -> None:
        self.base = base
        self.dist = dist

    def __iter__(self) -> Iterator[int]:
        order = list(self.base)
        return iter(order[self.dist.rank : len(self) * self.dist.world_size : self.dist.world_size])

    def __len__(self) -> int:
        return len(self.base) // self.dist.world_size
