"""Image folders as training data: ``ROOT/<split>/<class>/<image>`` trees read with torchvision.

The training split's sub-folders name the classes; the validation split must hold the same
classes and uses the same class-to-index mapping. The tree is checked cheaply up front (missing
folders, empty classes, classes that differ between splits) so that a mistake is reported
before any model is built. Per-class training counts are computed once here and handed to
whatever needs them (LDAM margins, class-balanced weights, samplers, checkpoints).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler

from common.dist import SINGLE, Dist
from common.errors import UserError
from data.augment import choose_scale, native_size
from data.images import (
    BAD_IMAGE_POLICIES,
    IMAGE_EXTENSIONS,
    CheckedImageFolder,
    CheckedLoader,
    collate_skipping_bad,
    image_files,
    load_rgb,
)
from data.names import printable
from data.samplers import DistributedShuffle, ShardSampler, class_balanced_sampler
from data.transforms import build_transform, check_auto_augment
from trainer.interrupt import ignore_in_worker

SAMPLERS = (None, "balanced")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")  # timm's, train and eval
log = logging.getLogger(__name__)


def list_classes(split_dir: Path) -> list[str]:
    """Sorted names of the visible sub-folders of one split (torchvision's order)."""
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


def count_images(class_dir: Path, ignored: Counter | None = None) -> int:
    """Image files of one class as the dataset reads them: each real file once, link loops cut.

    Says once, naming an example, when links led to a folder or file already counted; adds the
    files that are not images to ``ignored``, by extension.
    """
    paths, repeats = image_files(str(class_dir), ignored=ignored)
    if repeats:
        log.warning(
            "%s: %d link(s) lead to folders or images already counted (e.g. %s); each image is "
            "counted and trained on once.",
            class_dir,
            len(repeats),
            printable(repeats[0]),
        )
    return len(paths)


def check_tree(root: Path, train_dir: str, val_dir: str) -> list[str]:
    """Check an ImageFolder tree and return its class names; raise UserError naming what is wrong."""
    if not root.is_dir():
        raise UserError(
            f"dataset.root={str(root)!r} is not a folder. Point dataset.root at a folder holding "
            f"'{train_dir}/' and '{val_dir}/', each with one sub-folder of images per class."
        )
    splits = {}
    for key, name in (("dataset.train_dir", train_dir), ("dataset.val_dir", val_dir)):
        split = root / name
        if not split.is_dir():
            found = ", ".join(list_classes(root)) or "nothing"
            raise UserError(
                f"Split folder {str(split)!r} ({key}={name!r}) does not exist; {root} holds: {found}. "
                f"Set {key} to the sub-folder that holds this split."
            )
        classes = list_classes(split)
        if not classes:
            raise UserError(f"Split folder {str(split)!r} has no class sub-folders (one per class expected).")
        if len(classes) == 1:
            raise UserError(
                f"Split folder {str(split)!r} holds one class folder only ({classes[0]!r}); a classifier "
                f"needs at least two. Put each class's images in a sub-folder of its own."
            )
        ignored: Counter = Counter()
        empty = [c for c in classes if count_images(split / c, ignored) == 0]
        if ignored:
            kinds = ", ".join(f"{ext}: {n}" for ext, n in ignored.most_common())
            log.warning(
                "%s: %d file(s) that are not images were ignored (%s). Images are read by extension: %s.",
                split,
                sum(ignored.values()),
                kinds,
                " ".join(IMAGE_EXTENSIONS),
            )
        if empty:
            raise UserError(
                f"Class folder(s) {', '.join(repr(c) for c in empty)} in {str(split)!r} hold no images "
                f"(accepted extensions: {' '.join(IMAGE_EXTENSIONS)}). Add images or remove the folder."
            )
        splits[name] = classes
    train_classes, val_classes = splits[train_dir], splits[val_dir]
    if train_classes != val_classes:
        only_train = sorted(set(train_classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(train_classes))
        raise UserError(
            f"The splits of {str(root)!r} hold different classes: only in '{train_dir}': {only_train}, "
            f"only in '{val_dir}': {only_val}. Both splits need the same class folders."
        )
    return train_classes


def check_even_batch(batch_size: int) -> None:
    """Mixup/CutMix pairs the images of a batch: refuse an odd batch size, naming the key."""
    if batch_size % 2:
        raise UserError(
            f"Mixup/CutMix pairs the images of a batch, so dataset.batch_size must be even "
            f"(got {batch_size}); or turn Mixup off with mixup=none."
        )


def default_num_workers() -> int:
    """Loader workers that leave the cores to torch's own threads on small machines."""
    cpus = os.cpu_count() or 1
    return 0 if cpus <= 2 else min(8, cpus // 2)


@dataclass
class ImageFolderData:
    """Settings and datasets of one ImageFolder tree; builds the training and validation loaders."""

    root: str
    train_dir: str = "train"
    val_dir: str = "valid"
    image_size: int = 224
    batch_size: int = 32
    val_batch_size: int | None = None  # None: twice batch_size (no gradients to hold)
    num_workers: int | None = None  # None: chosen from the core count
    pin_memory: bool = True
    sampler: str | None = None  # None: shuffle; 'balanced': each class drawn equally often
    on_bad_image: str = "skip"  # skip (with a warning naming the file) | error
    cache_images: bool = False  # decode every image once into memory (for datasets that fit)
    persistent_workers: bool = False  # keep loader workers between epochs (resume is then not bit-exact)
    # Training augmentation (timm's create_transform); validation resizes and centre-crops.
    scale: list[float] | None = None  # None: chosen from the images' native size (data.augment)
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    hflip: float = 0.5
    color_jitter: float = 0.4
    auto_augment: str | None = None
    re_prob: float = 0.0
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])

    def __post_init__(self) -> None:
        for key in ("image_size", "batch_size"):
            if getattr(self, key) < 1:
                raise UserError(f"dataset.{key}={getattr(self, key)} must be a positive integer.")
        if self.on_bad_image not in BAD_IMAGE_POLICIES:
            raise UserError(f"dataset.on_bad_image={self.on_bad_image!r} is not one of: skip, error.")
        if self.sampler not in SAMPLERS:
            raise UserError(f"dataset.sampler={self.sampler!r} is not one of: null (shuffle), balanced.")
        for key in ("hflip", "re_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise UserError(
                    f"dataset.{key}={getattr(self, key)} is a probability: use a value in [0, 1]."
                )
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(
                f"dataset.interpolation={self.interpolation!r} is not one of: {', '.join(INTERPOLATIONS)}."
            )
        check_auto_augment(self.auto_augment)
        if self.num_workers is None:
            self.num_workers = default_num_workers()
        self.folder_names = check_tree(Path(self.root), self.train_dir, self.val_dir)
        if self.scale is not None and not (len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1] <= 1):
            raise UserError(
                f"dataset.scale={list(self.scale)} must be [min, max] area fractions with "
                f"0 < min <= max <= 1, e.g. [0.35, 1.0]; or null to choose from the image size."
            )
        loader = partial(load_rgb, target_size=self.image_size)
        self.train_dataset = CheckedImageFolder(str(Path(self.root) / self.train_dir), loader=loader)
        self.scale = choose_scale(self.scale, native_size([path for path, _ in self.train_dataset.samples]))
        self.train_dataset.transform = build_transform(self, is_training=True)
        val_tf = build_transform(self, is_training=False)
        self.val_dataset = CheckedImageFolder(str(Path(self.root) / self.val_dir), val_tf, loader=loader)
        if self.cache_images:
            held = self.train_dataset.preload() + self.val_dataset.preload()
            log.info(
                "dataset.cache_images: %d images decoded into %.0f MB of memory",
                len(self.train_dataset) + len(self.val_dataset),
                held / 2**20,
            )
        counts = torch.bincount(torch.tensor(self.train_dataset.targets), minlength=len(self.folder_names))
        self.class_counts: list[int] = counts.tolist()

    @property
    def class_names(self) -> list[str]:
        """Names shown in logs, reports and checkpoints: the folder names, escaped where they are not
        UTF-8 or hold control characters (unless a subclass maps them)."""
        return [printable(name) for name in self.folder_names]

    @property
    def num_classes(self) -> int:
        return len(self.folder_names)

    def train_loader(
        self, generator: torch.Generator, even_batches: bool = False, dist: Dist = SINGLE
    ) -> CheckedLoader:
        """Shuffled (or class-balanced) training batches drawn from ``generator``.

        ``even_batches`` (Mixup/CutMix pair up images, so they need an even batch) drops the
        last batch when it would be odd. Under DDP every rank draws the same epoch order from
        ``generator`` (seeded alike on all ranks) and trains on its own share of it.
        """
        if even_batches:
            check_even_batch(self.batch_size)
        sampler: Sampler[int] | None = None
        if self.sampler == "balanced":
            sampler = class_balanced_sampler(self.train_dataset.targets, generator)
        if dist.enabled:
            base = sampler or RandomSampler(self.train_dataset, generator=generator)
            sampler = DistributedShuffle(base, dist)
        last = (len(sampler) if sampler is not None else len(self.train_dataset)) % self.batch_size
        loader = DataLoader(
            self.train_dataset,
            batch_size=self.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            generator=generator,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            drop_last=even_batches and last % 2 == 1,
            collate_fn=collate_skipping_bad,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            worker_init_fn=ignore_in_worker,
        )
        return CheckedLoader(loader, self.on_bad_image)

    def val_loader(self, dist: Dist = SINGLE) -> CheckedLoader:
        """Every validation image once, in folder order; under DDP each rank a disjoint share."""
        loader = DataLoader(
            self.val_dataset,
            batch_size=self.val_batch_size or 2 * self.batch_size,
            sampler=ShardSampler(len(self.val_dataset), dist),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            collate_fn=collate_skipping_bad,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            worker_init_fn=ignore_in_worker,
        )
        return CheckedLoader(loader, self.on_bad_image)
