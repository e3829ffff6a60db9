"""Image folders as training data: ``ROOT/<split>/<class>/<image>`` trees read with torchvision.

The training split's sub-folders name the classes; the validation split must hold the same
classes and uses the same class-to-index mapping. The tree is checked cheaply up front (missing
folders, empty classes, classes that differ between splits) so that a mistake is reported
before any model is built. Per-class training counts are computed once here and handed to
whatever needs them (LDAM margins, class-balanced weights, samplers, checkpoints).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import signal
from collections import Counter
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler

from common.dist import SINGLE, Dist
from common.errors import UserError
from data.augment import choose_scale, native_size
from data.images import (
    HIDDEN,
    IMAGE_EXTENSIONS,
    CheckedImageFolder,
    CheckedLoader,
    class_folders,
    collate_skipping_bad,
    image_files,
    load_rgb,
)
from data.mixup import check_even_batch
from data.names import printable
from data.samplers import DistributedShuffle, ShardSampler, class_balanced_sampler
from data.settings import ImageFolderSettings
from data.split import Split, fold_split, fraction_split
from data.transforms import build_transform, check_auto_augment

log = logging.getLogger(__name__)


def ignore_in_worker(worker_id: int) -> None:
    """``worker_init_fn``: SIGTERM and Ctrl-C are the main process's to handle (it checkpoints and
    shuts its workers down); a worker that died of them would fail the step being finished."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)


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


def say_ignored(split: Path, ignored: Counter) -> None:
    """One line per split: the hidden or system entries and the files that are not images passed over."""
    hidden = ignored.pop(HIDDEN, 0)
    if hidden:
        log.info(
            "%s: %d hidden or system file(s) and folder(s) ignored (names starting with '.', such as "
            "macOS's ._NAME and .DS_Store, and __MACOSX, Thumbs.db, desktop.ini): never images or classes.",
            split,
            hidden,
        )
    if ignored:
        kinds = ", ".join(f"{ext}: {n}" for ext, n in ignored.most_common())
        log.warning(
            "%s: %d file(s) that are not images were ignored (%s). Images are read by extension: %s.",
            split,
            sum(ignored.values()),
            kinds,
            " ".join(IMAGE_EXTENSIONS),
        )


def check_tree(root: Path, train_dir: str, val_dir: str | None) -> list[str]:
    """Check an ImageFolder tree and return its class names; raise UserError naming what is wrong.
    ``val_dir`` None: the validation split is carved from ``train_dir`` (data.split)."""
    if not root.is_dir():
        raise UserError(
            f"dataset.root={str(root)!r} is not a folder. Point dataset.root at a folder holding "
            f"'{train_dir}/' and '{val_dir or 'valid'}/', each with one sub-folder of images per class."
        )
    splits = {}
    named = [("dataset.train_dir", train_dir)] + ([("dataset.val_dir", val_dir)] if val_dir else [])
    for key, name in named:
        split = root / name
        if not split.is_dir():
            found = ", ".join(class_folders(str(root))) or "nothing"
            raise UserError(
                f"Split folder {str(split)!r} ({key}={name!r}) does not exist; {root} holds: {found}. "
                f"Set {key} to the sub-folder that holds this split."
            )
        ignored: Counter = Counter()
        classes = class_folders(str(split), ignored)
        if not classes:
            raise UserError(f"Split folder {str(split)!r} has no class sub-folders (one per class expected).")
        if len(classes) == 1:
            raise UserError(
                f"Split folder {str(split)!r} holds one class folder only ({classes[0]!r}); a classifier "
                f"needs at least two. Put each class's images in a sub-folder of its own."
            )
        empty = [c for c in classes if count_images(split / c, ignored) == 0]
        say_ignored(split, ignored)
        if empty:
            raise UserError(
                f"Class folder(s) {', '.join(repr(c) for c in empty)} in {str(split)!r} hold no images "
                f"(accepted extensions: {' '.join(IMAGE_EXTENSIONS)}). Add images or remove the folder."
            )
        splits[name] = classes
    train_classes, val_classes = splits[train_dir], splits[val_dir or train_dir]
    if train_classes != val_classes:
        only_train = sorted(set(train_classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(train_classes))
        raise UserError(
            f"The splits of {str(root)!r} hold different classes: only in '{train_dir}': {only_train}, "
            f"only in '{val_dir}': {only_val}. Both splits need the same class folders."
        )
    return train_classes


def keep(dataset: CheckedImageFolder, samples: list[tuple[str, int]]) -> CheckedImageFolder:
    """``dataset`` reduced to ``samples`` (its part of a carved split)."""
    dataset.samples = dataset.imgs = list(samples)
    dataset.targets = [label for _, label in samples]
    return dataset


def carve(samples: list[tuple[str, int]], settings: ImageFolderSettings, classes: list[str]) -> Split:
    """The validation split of one tree (``dataset.val_fraction`` or ``dataset.folds``), said in the log."""
    if settings.folds is not None:
        split = fold_split(samples, settings.folds, settings.fold, settings.split_seed)
        what = f"fold {settings.fold} of {settings.folds} (stratified)"
        short = "fewer images than folds, so some folds validate without them: "
    else:
        split = fraction_split(samples, settings.val_fraction, settings.split_seed)
        what = f"{settings.val_fraction:g} of each class (stratified)"
        short = "a single image, which stays in training: "
    log.info(
        "Validation split carved from %s: %s, dataset.split_seed=%d: %d training and %d validation images",
        settings.train_dir,
        what,
        settings.split_seed,
        len(split.train),
        len(split.val),
    )
    if split.unsplit:
        names = ", ".join(printable(classes[c]) for c in split.unsplit)
        log.warning("Class(es) with %s%s", short, names)
    return split


class ImageFolderData:
    """The training and validation datasets of one tree, built from its settings; makes the loaders.

    Checks the tree (cheaply, before any image is decoded), reads the per-class training counts,
    chooses the crop scale when ``settings.scale`` is None, and builds both transforms. With
    ``train=False`` (evaluation) only the validation split is read.
    """

    def __init__(self, settings: ImageFolderSettings, train: bool = True) -> None:
        check_auto_augment(settings.auto_augment)
        root = settings.prepare_root()
        carved = settings.carved
        self.folder_names = check_tree(root, settings.train_dir, None if carved else settings.val_dir)
        loader = partial(load_rgb, target_size=settings.image_size, max_pixels=settings.max_image_pixels)
        self.train_dataset: CheckedImageFolder | None = None
        self.class_counts: list[int] = []
        self.split: Split | None = None
        scale = settings.scale
        tree = None
        if carved:  # one tree, listed once: the split is computed here and each side keeps its part
            tree = CheckedImageFolder(str(root / settings.train_dir), loader=loader)
            self.split = carve(tree.samples, settings, self.folder_names)
            if train:
                self.train_dataset = keep(copy.copy(tree), self.split.train)
        elif train:
            self.train_dataset = CheckedImageFolder(str(root / settings.train_dir), loader=loader)
        if self.train_dataset is not None:
            scale = choose_scale(scale, native_size([path for path, _ in self.train_dataset.samples]))
        # the settings this data was built with: the tree's real root and the crop scale chosen
        self.settings = dataclasses.replace(settings, root=str(root), scale=scale)
        if self.train_dataset is not None:
            self.train_dataset.transform = build_transform(self.settings, is_training=True)
            targets = torch.tensor(self.train_dataset.targets)
            self.class_counts = torch.bincount(targets, minlength=len(self.folder_names)).tolist()
        val_tf = build_transform(self.settings, is_training=False)
        if tree is not None and self.split is not None:
            self.val_dataset = keep(copy.copy(tree), self.split.val)
            self.val_dataset.transform = val_tf
        else:
            self.val_dataset = CheckedImageFolder(str(root / settings.val_dir), val_tf, loader=loader)
        if settings.cache_images:
            datasets = [d for d in (self.train_dataset, self.val_dataset) if d is not None]
            held = sum(d.preload() for d in datasets)
            log.info(
                "dataset.cache_images: %d images decoded into %.0f MB of memory",
                sum(len(d) for d in datasets),
                held / 2**20,
            )

    @property
    def root(self) -> str:
        return self.settings.root

    @property
    def val_source(self) -> str:
        """Where the validation images come from, in words: ``ROOT/valid``, or ``ROOT/train, fold 2
        of 5`` / ``ROOT/train, a 0.2 split`` for a split carved from one tree."""
        s = self.settings
        if s.folds is not None:
            return f"{Path(s.root) / s.train_dir}, fold {s.fold} of {s.folds} (split_seed {s.split_seed})"
        if s.val_fraction is not None:
            return f"{Path(s.root) / s.train_dir}, a {s.val_fraction:g} split (split_seed {s.split_seed})"
        return str(Path(s.root) / s.val_dir)

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

    def val_loader(self, dist: Dist = SINGLE) -> CheckedLoader:
        """Every validation image once, in folder order; under DDP each rank a disjoint share."""
        loader = DataLoader(
            self.val_dataset,
            batch_size=self.settings.val_batch_size or 2 * self.settings.batch_size,
            sampler=ShardSampler(len(self.val_dataset), dist),
            num_workers=self.settings.num_workers,
            pin_memory=self.settings.pin_memory and torch.cuda.is_available(),
            collate_fn=collate_skipping_bad,
            persistent_workers=self.settings.persistent_workers and self.settings.num_workers > 0,
            worker_init_fn=ignore_in_worker,
        )
        return CheckedLoader(loader, self.settings.on_bad_image)
