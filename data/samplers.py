"""Samplers: class-balanced draws, repeat-factor sampling, and each DDP rank's share of an epoch or
of the validation set.

Sample i of class c gets weight 1 / n_c and ``len(dataset)`` indices are drawn with replacement
per epoch, so an epoch has the usual length while each class fills about 1/C of it (the
"class-balanced sampling" baseline of Kang et al., ICLR 2020, "Decoupling Representation and
Classifier for Long-Tailed Recognition"). Draws come from the loader's generator, so they are
reproducible from the seed. Under DDP every rank draws the same order from a generator seeded
alike and keeps its strided share (``DistributedShuffle``); validation shards the data without
padding (``ShardSampler``), so every image counts once.

Repeat-factor sampling (Gupta et al., CVPR 2019, "LVIS: A Dataset for Large Vocabulary Instance
Segmentation"; APViT trains RAF-DB with it) is milder: an image of class c is repeated
r_c = max(1, sqrt(t / f_c)) times per epoch, f_c the share of the training images in class c and
t the threshold (``dataset.repeat_threshold``; default 1 / C, so the classes rarer than the
average one are repeated). ``RepeatFactorSampler`` keeps floor(r) copies of each image and draws
the fractional parts without replacement, weighted by them, to a fixed epoch length of
round(sum of r): each image is seen about r times an epoch, and every epoch has the same number
of steps (the schedule and a mid-epoch resume count on it).
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


def repeat_factors(targets: Sequence[int], threshold: float | None = None) -> torch.Tensor:
    """r_i = max(1, sqrt(t / f_c)) for each sample i of class c: shape (len(targets),)."""
    labels = torch.as_tensor(targets, dtype=torch.long)
    counts = torch.bincount(labels).double()
    share = counts / len(labels)
    t = 1.0 / int((counts > 0).sum()) if threshold is None else threshold
    per_class = torch.clamp((t / share.clamp_min(1e-12)).sqrt(), min=1.0)
    return per_class[labels]


class RepeatFactorSampler(Sampler[int]):
    """Each image about r_i times an epoch (``repeat_factors``), in a shuffled order, always the
    same number of indices: round(sum of r)."""

    def __init__(self, targets: Sequence[int], threshold: float | None, generator: torch.Generator) -> None:
        self.factors = repeat_factors(targets, threshold)
        self.whole = self.factors.floor().long()
        self.extra = self.factors - self.whole  # fractional parts, drawn each epoch
        self.length = round(float(self.factors.sum()))
        self.generator = generator

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        indices = torch.repeat_interleave(torch.arange(len(self.whole)), self.whole)
        missing = self.length - len(indices)
        if missing > 0:
            drawn = torch.multinomial(self.extra, missing, replacement=False, generator=self.generator)
            indices = torch.cat([indices, drawn])
        order = torch.randperm(len(indices), generator=self.generator)
        return iter(indices[order].tolist())


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
