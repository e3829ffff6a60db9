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


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 31-bit seed for ``epoch`` of a run seeded with ``seed`` (and for process ``rank`` > 0)."""
    entropy = [seed, epoch] if rank == 0 else [seed, epoch, rank]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0]) & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def reseed_epoch(seed: int, epoch: int, rank: int, loader_generator: torch.Generator | None) -> None:
    """Make the random state of ``epoch`` a function of (seed, epoch, rank) alone.

    The loader's generator gets the same seed on every rank (one shared epoch order, split
    between ranks); the global generators differ by rank, so augmentations do too.
    """
    seed_everything(epoch_seed(seed, epoch, rank))
    if loader_generator is not None:
        loader_generator.manual_seed(epoch_seed(seed, epoch))


def capture_rng() -> dict:
    """Python's, NumPy's and torch's generator states, in types ``torch.load(weights_only=True)`` reads."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict) -> None:
    """Put back what ``capture_rng`` returned."""
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
