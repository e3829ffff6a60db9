"""Dataset settings: pure, validated dataclasses that Hydra types the ``dataset`` group with.

Reading them touches no file and imports no heavy library, so a wrong value is refused as soon
as the config is composed. ``data.loaders.ImageData`` builds the datasets and loaders from them.
``DataSettings`` holds what every source shares (image size, batches, augmentation, a carved
split); each source is a subclass with a ``name`` (the schema its YAML names, registered by
``data.sources``) and a ``listing`` of its images: ``ImageFolderSettings`` reads a tree of class
folders (``data.tree``), ``LabelFileSettings`` a label file, CSV, TSV or space-separated
(``data.labels``). ``DigitsSettings`` names the built-in long-tailed digits (written into a cache
on first use), ``RafDBSettings`` a RAF-DB tree whose classes are emotions.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from common.dist import task_cpus
from common.errors import UserError
from data.formats import DELIMITERS, MAX_IMAGE_PIXELS
from data.names import printable

if TYPE_CHECKING:
    from data.listing import Listing

SAMPLERS = (None, "balanced", "repeat_factor")
BAD_IMAGE_POLICIES = ("skip", "error")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")  # timm's, train and eval


def default_num_workers() -> int:
    """Loader workers that leave the cores to torch's own threads on small machines."""
    cpus = task_cpus() or os.cpu_count() or 1
    return 0 if cpus <= 2 else min(8, cpus // 2)


@dataclass
class DataSettings:
    """What every data source shares: where it is, how images are loaded and augmented, and a
    validation split carved from its training images."""

    name: ClassVar[str | None] = None  # a source: its schema's name (schema/dataset/<name>)
    root: str
    image_size: int = 224
    batch_size: int = 32
    val_batch_size: int | None = None  # None: twice batch_size (no gradients to hold)
    num_workers: int | None = None  # None: chosen from the core count
    pin_memory: bool = True
    sampler: str | None = None  # None: shuffle; balanced: each class equally often; repeat_factor
    repeat_threshold: float | None = None  # repeat_factor's t (data.samplers); None: 1 / classes
    on_bad_image: str = "skip"  # skip (with a warning naming the file) | error
    cache_images: bool = False  # decode every image once into memory (for datasets that fit)
    # images with more pixels are skipped as unreadable (decompression bombs); null: no limit
    max_image_pixels: int | None = MAX_IMAGE_PIXELS
    persistent_workers: bool = False  # keep loader workers between epochs (resume is then not bit-exact)
    # Training augmentation (timm's create_transform); validation resizes and centre-crops.
    scale: list[float] | None = None  # None: chosen from the images' native size (data.augment)
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    hflip: float = 0.5
    color_jitter: float = 0.4
    auto_augment: str | None = None  # checked against timm's parser when the data is built
    re_prob: float = 0.0
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    # One tree, split here (data.split): a stratified fraction of train_dir validates (val_dir
    # unused), or fold `fold` (0 to folds - 1) of a stratified k-fold; both from split_seed.
    val_fraction: float | None = None
    folds: int | None = None
    fold: int = 0
    split_seed: int = 0

    def __post_init__(self) -> None:
        self.check_split()
        for key in ("image_size", "batch_size"):
            if getattr(self, key) < 1:
                raise UserError(f"dataset.{key}={getattr(self, key)} must be a positive integer.")
        if self.max_image_pixels is not None and self.max_image_pixels < 1:
            raise UserError(
                f"dataset.max_image_pixels={self.max_image_pixels} must be a positive number of pixels, "
                f"or null for no limit."
            )
        if self.on_bad_image not in BAD_IMAGE_POLICIES:
            raise UserError(f"dataset.on_bad_image={self.on_bad_image!r} is not one of: skip, error.")
        if self.sampler not in SAMPLERS:
            raise UserError(
                f"dataset.sampler={self.sampler!r} is not one of: null (shuffle), balanced, repeat_factor."
            )
        if self.repeat_threshold is not None and not 0 < self.repeat_threshold <= 1:
            raise UserError(
                f"dataset.repeat_threshold={self.repeat_threshold} is a share of the training images: "
                f"use a value in (0, 1], or null for 1 / number of classes."
            )
        for key in ("hflip", "re_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise UserError(
                    f"dataset.{key}={getattr(self, key)} is a probability: use a value in [0, 1]."
                )
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(
                f"dataset.interpolation={self.interpolation!r} is not one of: {', '.join(INTERPOLATIONS)}."
            )
        if self.scale is not None and not (len(self.scale) == 2 and 0 < self.scale[0] <= self.scale[1] <= 1):
            raise UserError(
                f"dataset.scale={list(self.scale)} must be [min, max] area fractions with "
                f"0 < min <= max <= 1, e.g. [0.35, 1.0]; or null to choose from the image size."
            )
        for key in ("mean", "std"):
            values = list(getattr(self, key))
            if len(values) != 3 or (key == "std" and min(values) <= 0):
                raise UserError(
                    f"dataset.{key}={values} must be 3 numbers, one per RGB channel"
                    f"{' (all positive)' if key == 'std' else ''}, e.g. {[0.5, 0.5, 0.5]}."
                )
        if self.num_workers is None:
            self.num_workers = default_num_workers()

    def check_split(self) -> None:
        if self.val_fraction is not None and self.folds is not None:
            raise UserError(
                f"dataset.val_fraction={self.val_fraction} and dataset.folds={self.folds} both carve a "
                f"validation split: set one of them (the other null)."
            )
        if self.val_fraction is not None and not 0 < self.val_fraction < 1:
            raise UserError(
                f"dataset.val_fraction={self.val_fraction} must lie between 0 and 1 (0.2: a fifth of "
                f"each class validates)."
            )
        if self.folds is not None and not (self.folds >= 2 and 0 <= self.fold < self.folds):
            raise UserError(
                f"dataset.folds={self.folds} dataset.fold={self.fold}: folds must be at least 2 and "
                f"fold one of 0 to folds - 1 (python train.py -m dataset.folds=5 dataset.fold=0,1,2,3,4)."
            )

    @property
    def carved(self) -> bool:
        """Whether the validation split is carved from the training images (``val_fraction`` or ``folds``)."""
        return self.val_fraction is not None or self.folds is not None

    def prepare_root(self) -> Path:
        """The tree to read, as an absolute path with ``~`` expanded (the digits write theirs first)."""
        return Path(self.root).expanduser().absolute()

    def display_names(self, folder_names: Sequence[str]) -> list[str]:
        """Class names shown in logs, reports and checkpoints: the folder names, escaped where
        they are not UTF-8 or hold control characters."""
        return [printable(name) for name in folder_names]

    def listing(self, root: Path, splits: Collection[str]) -> Listing:
        """The source's images and labels of the ``splits`` asked for (train, valid, test), read
        under ``root``; a carved validation split is made from its training images afterwards."""
        raise NotImplementedError(f"{type(self).__name__} is no data source: it lists no images")


@dataclass
class ImageFolderSettings(DataSettings):
    """One ImageFolder tree ``root/<train_dir|val_dir|test_dir>/<class>/<image>``."""

    name: ClassVar[str | None] = "imagefolder"
    train_dir: str = "train"
    val_dir: str = "valid"
    test_dir: str | None = None  # a held-out test split, evaluated once with best.pt after training

    def split_dirs(self, splits: Collection[str]) -> dict[str, tuple[str, str]]:
        """The folders of the ``splits`` to read (split -> (settings key, folder)), training first;
        a carved validation split reads the training folder instead."""
        dirs = {"train": ("dataset.train_dir", self.train_dir)}
        if not self.carved:
            dirs["valid"] = ("dataset.val_dir", self.val_dir)
        if self.test_dir is not None:
            dirs["test"] = ("dataset.test_dir", self.test_dir)
        needed = set(splits) | ({"train"} if self.carved and "valid" in splits else set())
        return {split: where for split, where in dirs.items() if split in needed}

    def listing(self, root: Path, splits: Collection[str]) -> Listing:
        from data.listing import Listing
        from data.tree import list_tree

        dirs = self.split_dirs(splits)
        if not dirs:  # only a test split asked for, and the tree has none
            return Listing([], [], [], [], root)
        return list_tree(root, dirs)


@dataclass
class DigitsSettings(ImageFolderSettings):
    """scikit-learn's digits as a long-tailed tree in a cache folder (``root``)."""

    name: ClassVar[str | None] = "digits"

    root: str | None = None  # None: .cache/ in the project folder
    imbalance_ratio: float = 10.0
    val_per_class: int = 50  # the digits' own valid/ (split_seed also draws it)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.imbalance_ratio < 1:
            raise UserError(
                f"dataset.imbalance_ratio={self.imbalance_ratio} must be at least 1 (1 = balanced)."
            )
        if not 1 <= self.val_per_class <= 100:
            raise UserError(f"dataset.val_per_class={self.val_per_class} must be between 1 and 100.")

    def prepare_root(self) -> Path:
        from data.digits import DEFAULT_CACHE, prepare_digits  # numpy, PIL and scikit-learn: at build time

        cache = Path(self.root).expanduser().absolute() if self.root else DEFAULT_CACHE
        return prepare_digits(cache, self.imbalance_ratio, self.val_per_class, self.split_seed)


@dataclass
class RafDBSettings(ImageFolderSettings):
    """A RAF-DB tree: class folders named ``1``-``7`` or by emotion; classes shown as emotions."""

    name: ClassVar[str | None] = "rafdb"

    def display_names(self, folder_names: Sequence[str]) -> list[str]:
        from data.rafdb import emotion_name

        return [emotion_name(name) for name in folder_names]


SPLIT_NAMES = ("train", "valid", "test")
PATH_FIELDS = ("path", "stem", "ext")


@dataclass
class LabelFileSettings(DataSettings):
    """Images listed in a label file: one row per image with its path, its label and optionally its
    split (``data.labels``). Columns are named (a header row) or numbered from 0."""

    name: ClassVar[str | None] = "csv"
    labels: str = "???"  # the label file, relative to root unless absolute
    val_labels: str | None = None  # a separate file of validation rows (same columns)
    test_labels: str | None = None  # a separate file of test rows, evaluated once after training
    image_dir: str = "."  # the folder the listed paths are relative to, relative to root
    path_format: str = "{path}"  # the file of a row: {path} the cell, {stem} without, {ext} its extension
    delimiter: str | None = None  # comma | tab | semicolon | space; null: from the first line
    header: bool | None = None  # null: a header when columns are named, or when row 1 names no file
    path_column: str = "0"  # a column name (from the header) or a position from 0
    label_column: str = "1"
    split_column: str | None = None  # a column whose value is the row's split
    split_pattern: str | None = None  # or a regular expression on the path whose first group is it
    # what a split value means: train, valid or test (values compared lower-case)
    split_values: dict[str, str] = field(
        default_factory=lambda: {"train": "train", "valid": "valid", "val": "valid", "test": "test"}
    )
    class_names: list[str] | None = None  # the classes in order (integer labels: first_label, then on)
    first_label: int = 0  # integer labels count classes from this number (RAF-DB: 1)
    on_bad_row: str = "skip"  # skip (counted, with examples) | error

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.labels in ("???", ""):
            raise UserError("dataset.labels is required: the label file, e.g. dataset.labels=labels.csv.")
        if self.delimiter is not None and self.delimiter not in DELIMITERS:
            raise UserError(
                f"dataset.delimiter={self.delimiter!r} is not one of: {', '.join(DELIMITERS)}, or null "
                f"(detected from the first line: tab, comma, semicolon, else spaces)."
            )
        if self.on_bad_row not in BAD_IMAGE_POLICIES:
            raise UserError(f"dataset.on_bad_row={self.on_bad_row!r} is not one of: skip, error.")
        if self.split_column is not None and self.split_pattern is not None:
            raise UserError(
                f"dataset.split_column={self.split_column!r} and dataset.split_pattern="
                f"{self.split_pattern!r} both give a row's split: set one of them."
            )
        self.check_pattern()
        self.check_path_format()
        bad = {k: v for k, v in self.split_values.items() if v not in SPLIT_NAMES}
        if bad:
            raise UserError(
                f"dataset.split_values maps {bad}: each value must be one of {', '.join(SPLIT_NAMES)}."
            )
        names = self.class_names
        if names is not None and (len(names) < 2 or len(set(names)) != len(names)):
            raise UserError(f"dataset.class_names={list(names)} must name at least two classes, each once.")

    def listing(self, root: Path, splits: Collection[str]) -> Listing:
        from data.labels import list_labels

        return list_labels(self, root)

    def check_pattern(self) -> None:
        if self.split_pattern is None:
            return
        import re

        try:
            groups = re.compile(self.split_pattern).groups
        except re.error as err:
            raise UserError(
                f"dataset.split_pattern={self.split_pattern!r} is no regular expression: {err}."
            ) from None
        if groups < 1:
            raise UserError(
                f"dataset.split_pattern={self.split_pattern!r} needs a group in parentheses that "
                f"captures the split, e.g. '^(train|test)_'."
            )

    def check_path_format(self) -> None:
        import string

        try:
            parsed = string.Formatter().parse(self.path_format)
            fields = {name for _, name, _, _ in parsed if name is not None}
        except ValueError as err:
            fields = {f"({err})"}
        if not fields <= set(PATH_FIELDS) or not fields:
            raise UserError(
                f"dataset.path_format={self.path_format!r} may use {{path}} (the cell), {{stem}} (the "
                f"cell without its extension) and {{ext}} (its extension), and must use one: e.g. "
                f"'{{path}}.jpg' or '{{stem}}_aligned{{ext}}'."
            )
