"""Write a long-tailed ImageFolder tree from an MNIST-format (IDX) data set, for measurements.

    python scripts/tools/longtail_idx.py source=/usr/share/datasets/fashion-mnist out=DIR
                                         [ratio=100] [head=500] [val_per_class=100] [split_seed=0]

``source`` holds ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz`` and the
``t10k-*`` pair (MNIST, Fashion-MNIST, KMNIST; Debian's ``dataset-fashion-mnist`` package
installs Fashion-MNIST under /usr/share/datasets/fashion-mnist). ``out/train/<class>/`` keeps
``head * ratio^(-i / (C - 1))`` images of class i (the long-tailed CIFAR profile of Cao et al.,
NeurIPS 2019), drawn from the training file; ``out/valid/<class>/`` holds ``val_per_class``
images per class from the test file, balanced. The draw is fixed by ``split_seed``. Then:

    python train.py dataset=imagefolder dataset.root=DIR ...
"""

from __future__ import annotations

import gzip
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING

from common.errors import UserError


def read_idx(path: Path):
    """The array in an IDX file (gzip or plain): uint8 images (N, H, W) or labels (N,)."""
    import numpy as np

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise UserError(f"{path}: not an IDX file of unsigned bytes (MNIST's format)")
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def find(source: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (source / name).is_file():
            return source / name
    raise UserError(f"source={source}: no {stem}(.gz); an MNIST-format folder holds train-* and t10k-* files")


def write_tree(source: Path, out: Path, ratio: float, head: int, val_per_class: int, split_seed: int) -> dict:
    import numpy as np
    from PIL import Image

    from data.digits import long_tail_counts

    if out.exists() and any(out.iterdir()):
        raise UserError(f"out={out} is not empty; choose a new folder")
    rng = np.random.default_rng(split_seed)
    counts: dict[str, list[int]] = {}
    for split, prefix in (("train", "train"), ("valid", "t10k")):
        images = read_idx(find(source, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(find(source, f"{prefix}-labels-idx1-ubyte"))
        classes = sorted(set(labels.tolist()))
        wanted = (
            long_tail_counts(head, len(classes), ratio)
            if split == "train"
            else [val_per_class] * len(classes)
        )
        counts[split] = wanted
        for c, n in zip(classes, wanted, strict=True):
            pool = np.flatnonzero(labels == c)
            if n > len(pool):
                raise UserError(f"class {c} has {len(pool)} images in {prefix}-*, fewer than the {n} asked")
            folder = out / split / str(c)
            folder.mkdir(parents=True, exist_ok=True)
            for i in rng.choice(pool, size=n, replace=False):
                Image.fromarray(images[i], mode="L").save(folder / f"{i:05d}.png")
    return counts


@dataclass
class LongTailSettings:
    source: str = MISSING  # a folder of MNIST-format files
    out: str = MISSING  # a new folder for the tree
    ratio: float = 100.0  # largest class / smallest class
    head: int = 500  # training images of the largest class
    val_per_class: int = 100
    split_seed: int = 0


def main(args: LongTailSettings) -> None:
    counts = write_tree(
        Path(args.source), Path(args.out), args.ratio, args.head, args.val_per_class, args.split_seed
    )
    print(f"{args.out}: train {counts['train']}, valid {counts['valid'][0]} per class")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lib.app import run_app

    run_app(main, LongTailSettings, "longtail_idx", __doc__)
