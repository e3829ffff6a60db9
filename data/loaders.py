"""Training data as datasets and loaders, from any source: an ImageFolder tree or a label file.

The source is listed and checked first (``data.tree``, ``data.labels``), a validation split
carved from it if asked (``data.listing``); per-class training counts are computed once here and
handed to whatever needs them (LDAM margins, class-balanced weights, samplers, checkpoints).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler

from common.dist import SINGLE, Dist
from common.run_folder import RunFolder
from common.signals import ignore_in_worker
from data.augment import choose_scale, native_size, say_training
from data.images import CheckedLoader, ImageList, collate_skipping_bad, load_rgb
from data.listing import SPLITS, Listing, carve, warn_of_copies, write_classes
from data.mixup import check_even_batch
from data.readable import drop_unopenable
from data.samplers import DistributedShuffle, RepeatFactorSampler, ShardSampler, class_balanced_sampler
from data.settings import DataSettings
from data.split import RecordedSplit, write_split
from data.transforms import build_transform, check_auto_augment

log = logging.getLogger(__name__)


def list_source(settings: DataSettings, root: Path, splits: Collection[str]) -> Listing:
    """The listing of ``settings``' source with the splits asked for, its validation split carved
    from the training images when ``dataset.val_fraction`` or ``dataset.folds`` asks."""
    listing = drop_unopenable(
        settings.listing(root, splits), settings.on_bad_image, settings.max_image_pixels
    )
    if settings.carved and "valid" in splits:
        listing = carve(listing, settings.folds, settings.fold, settings.val_fraction, settings.split_seed)
    if "train" not in splits:
        listing = dataclasses.replace(listing, train=[])
    return listing


class ImageData:
    """The training, validation and test datasets of one source, built from its settings; makes the loaders.

    Lists and checks the source (before any image is decoded), carves a validation split if asked,
    reads the per-class training counts, chooses the crop scale when ``settings.scale`` is None,
    and builds the transforms. ``splits`` names the splits to read (evaluation: ``("valid",)``);
    ``recorded``, a run's recorded split, which a carved split must equal (the scripts).
    """

    def __init__(
        self, settings: DataSettings, splits: Collection[str] = SPLITS, recorded: RecordedSplit | None = None
    ) -> None:
        check_auto_augment(settings.auto_augment)
        root = settings.prepare_root()
        listing = list_source(settings, root, splits)
        if recorded is not None and listing.split is not None:  # a run's own split, as it recorded it
            recorded.check(listing.split, listing.base)
        warn_of_copies(listing)
        self.folder_names = listing.classes
        self.listing, self.split = listing, listing.split
        loader = partial(load_rgb, target_size=settings.image_size, max_pixels=settings.max_image_pixels)
        self.train_dataset = ImageList(listing.train, listing.classes, loader) if listing.train else None
        self.class_counts = listing.counts(listing.train) if listing.train else []
        scale = settings.scale
        if self.train_dataset is not None:
            native = native_size([path for path, _ in listing.train])
            scale = choose_scale(scale, native)
            say_training(settings, scale, native, chosen=settings.scale is None)
        # the settings this data was built with: the source's real root and the crop scale chosen
        self.settings = dataclasses.replace(settings, root=str(root), scale=scale)
        if self.train_dataset is not None:
            self.train_dataset.transform = build_transform(self.settings, is_training=True)
        val_tf = build_transform(self.settings, is_training=False)
        self.val_dataset = ImageList(listing.val, listing.classes, loader, val_tf)
        self.test_dataset = ImageList(listing.test, listing.classes, loader, val_tf) if listing.test else None
        if settings.cache_images:
            datasets = [d for d in (self.train_dataset, self.val_dataset, self.test_dataset) if d is not None]
            held = sum(d.preload() for d in datasets)
            log.info(
                "dataset.cache_images: %d images decoded into %.0f MB of memory",
                sum(len(d) for d in datasets),
                held / 2**20,
            )

    def write_records(self, run_dir: Path) -> None:
        """``classes.csv`` (every class's images per split) and, for a carved split, ``split.csv``."""
        write_classes(RunFolder(run_dir).classes_csv, self.class_names, self.counts_by_split())
        if self.split is not None:
            write_split(RunFolder(run_dir).split_csv, self.split, self.class_names, self.listing.base)

    def counts_by_split(self) -> dict[str, list[int]]:
        """Images per class of each split read (training, validation, and test if there is one)."""
        listing = self.listing
        columns = {"train": self.class_counts} if self.train_dataset is not None else {}
        columns |= {"valid": listing.counts(listing.val)}
        return columns | ({"test": listing.counts(listing.test)} if listing.test else {})

    @property
    def root(self) -> str:
        return self.settings.root

    def source(self, split: str) -> str:
        """Where a split's images come from, in words: ``ROOT/valid``, or ``ROOT/train, fold 2 of 5``
        / ``ROOT/train, a 0.2 split`` for a split carved from the training images."""
        return self.listing.sources.get(split, "")

    @property
    def class_names(self) -> list[str]:
        """Names shown in logs, reports and checkpoints (see ``ImageFolderSettings.display_names``)."""
        return self.settings.display_names(self.folder_names)

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
            check_even_batch(self.settings.batch_size)
        sampler: Sampler[int] | None = None
        if self.settings.sampler == "balanced":
            sampler = class_balanced_sampler(self.train_dataset.targets, generator)
        elif self.settings.sampler == "repeat_factor":
            sampler = RepeatFactorSampler(
                self.train_dataset.targets, self.settings.repeat_threshold, generator
            )
        if dist.enabled:
            base = sampler or RandomSampler(self.train_dataset, generator=generator)
            sampler = DistributedShuffle(base, dist)
        last = (len(sampler) if sampler is not None else len(self.train_dataset)) % self.settings.batch_size
        if last == 1:  # BatchNorm cannot train on one image; the order is reshuffled, so no image is lost
            log.info(
                "The last training batch of each epoch would hold one image (%d images, dataset.batch_size="
                "%d): it is dropped, since BatchNorm cannot train on a single image.",
                len(sampler) if sampler is not None else len(self.train_dataset),
                self.settings.batch_size,
            )
        loader = DataLoader(
            self.train_dataset,
            batch_size=self.settings.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            generator=generator,
            num_workers=self.settings.num_workers,
            pin_memory=self.settings.pin_memory and torch.cuda.is_available(),
            drop_last=last == 1 or (even_batches and last % 2 == 1),
            collate_fn=collate_skipping_bad,
            persistent_workers=self.settings.persistent_workers and self.settings.num_workers > 0,
            worker_init_fn=ignore_in_worker,
        )
        return CheckedLoader(loader, self.settings.on_bad_image)

    def evaluated(self, split: str = "valid") -> ImageList | None:
        """The dataset a split evaluates on: the validation images, or the test images (None if none)."""
        return self.test_dataset if split == "test" else self.val_dataset

    def val_loader(self, dist: Dist = SINGLE, split: str = "valid") -> CheckedLoader:
        """Every validation (or test) image once, in listing order; under DDP each rank a disjoint share."""
        dataset = self.evaluated(split)
        loader = DataLoader(
            dataset,
            batch_size=self.settings.val_batch_size or 2 * self.settings.batch_size,
            sampler=ShardSampler(len(dataset), dist),
            num_workers=self.settings.num_workers,
            pin_memory=self.settings.pin_memory and torch.cuda.is_available(),
            collate_fn=collate_skipping_bad,
            persistent_workers=self.settings.persistent_workers and self.settings.num_workers > 0,
            worker_init_fn=ignore_in_worker,
        )
        return CheckedLoader(loader, self.settings.on_bad_image)
