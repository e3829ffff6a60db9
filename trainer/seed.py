"""Seeding: one seed for the run, re-derived for every epoch.

Each epoch reseeds Python's, NumPy's and torch's generators (and the loader's shuffling
generator) from (seed, epoch). The random state at the start of epoch k is therefore a pure
function of the seed and k, which makes a run resumed at epoch k draw exactly what an
uninterrupted run draws: same shuffling, augmentation, Mixup and dropout.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def epoch_seed(seed: int, epoch: int) -> int:
    """A 31-bit seed for ``epoch`` of a run seeded with ``seed``; distinct across both."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]) & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
