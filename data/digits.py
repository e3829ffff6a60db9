"""The built-in dataset: scikit-learn's handwritten digits as a long-tailed ImageFolder tree.

scikit-learn ships 1,797 grayscale digits of 8x8 pixels (10 classes) inside its package, so
nothing is downloaded. On first use they are written once as PNG files into a cache folder:
a balanced validation split (``val_per_class`` images per class) and a long-tailed training
split with the exponential profile of the long-tailed CIFAR benchmarks (Cao et al., NeurIPS
2019; Cui et al., CVPR 2019): class i keeps n_max * ratio^(-i / (C - 1)) images, so the
largest class (0) has ``imbalance_ratio`` times as many as the smallest (9). The split is
fixed by ``split_seed``, not by the training seed, so every run sees the same data.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_CACHE = Path(__file__).resolve().parent.parent / ".cache"


def long_tail_counts(n_max: int, num_classes: int, imbalance_ratio: float) -> list[int]:
    """Images kept per class: n_max * ratio^(-i / (C - 1)), at least one."""
    return [max(1, int(n_max * imbalance_ratio ** (-i / (num_classes - 1)))) for i in range(num_classes)]


def write_digits_tree(dst: Path, imbalance_ratio: float, val_per_class: int, split_seed: int) -> dict:
    """Write ``dst/train/<digit>/*.png`` (long-tailed) and ``dst/valid/<digit>/*.png`` (balanced)."""
    from sklearn.datasets import load_digits  # only needed the first time

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)  # (N, 8, 8), 0..16 -> 0..255
    labels = digits.target
    rng = np.random.default_rng(split_seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(10)]
    n_max = min(len(idx) for idx in per_class) - val_per_class
    train_counts = long_tail_counts(n_max, 10, imbalance_ratio)
    for c, idx in enumerate(per_class):
        splits = {"valid": idx[:val_per_class], "train": idx[val_per_class : val_per_class + train_counts[c]]}
        for split, chosen in splits.items():
            folder = dst / split / str(c)
            folder.mkdir(parents=True, exist_ok=True)
            for i in chosen:
                Image.fromarray(images[i], mode="L").save(folder / f"{i:04d}.png")
    return {"train": train_counts, "valid": [val_per_class] * 10}


def prepare_digits(cache_dir: Path, imbalance_ratio: float, val_per_class: int, split_seed: int) -> Path:
    """Return the digits tree for these settings, writing it first if it is not cached yet.

    The tree is written into a temporary sibling and renamed into place, so concurrent runs
    (a multirun sweep, parallel tests) never see a half-written tree.
    """
    name = f"digits_lt{imbalance_ratio:g}_val{val_per_class}_seed{split_seed}"
    dst = cache_dir / name
    if dst.is_dir():
        return dst
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f".{name}.{uuid.uuid4().hex}.tmp"
    try:
        write_digits_tree(tmp, imbalance_ratio, val_per_class, split_seed)
        try:
            os.rename(tmp, dst)
        except OSError:
            if not dst.is_dir():  # lost a race to another writer: theirs is identical
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst
