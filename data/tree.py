"""An ImageFolder tree as a ``Listing``: ``ROOT/<split>/<class>/<image>``, checked and listed at once.

The training split's sub-folders name the classes; the validation (and a test) split must hold
the same classes. Each split folder is walked once (``data.images.image_files``: links
followed, loops cut, each real file once), and what is wrong is refused before any model is
built: a missing folder, a class folder without images, classes that differ between splits.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from common.errors import UserError
from data.images import HIDDEN, IMAGE_EXTENSIONS, class_folders, image_files
from data.listing import Listing
from data.names import printable
from data.split import Sample

log = logging.getLogger(__name__)


def class_images(class_dir: Path, ignored: Counter) -> list[str]:
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
    return paths


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


def list_split(root: Path, key: str, name: str) -> tuple[list[str], list[Sample]]:
    """The class folders of one split folder and its images; UserError naming what is wrong."""
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
    samples, empty = [], []
    for index, name_ in enumerate(classes):
        paths = class_images(split / name_, ignored)
        empty += [] if paths else [name_]
        samples += [(path, index) for path in paths]
    say_ignored(split, ignored)
    if empty:
        raise UserError(
            f"Class folder(s) {', '.join(repr(c) for c in empty)} in {str(split)!r} hold no images "
            f"(accepted extensions: {' '.join(IMAGE_EXTENSIONS)}). Add images or remove the folder."
        )
    return classes, samples


def list_tree(root: Path, dirs: dict[str, tuple[str, str]]) -> Listing:
    """The splits of the tree at ``root`` named in ``dirs`` (split -> (settings key, folder)),
    the training split first; a split not named is empty."""
    if not root.is_dir():
        train_dir = dirs.get("train", ("", "train"))[1]
        raise UserError(
            f"dataset.root={str(root)!r} is not a folder. Point dataset.root at a folder holding "
            f"'{train_dir}/' and 'valid/', each with one sub-folder of images per class."
        )
    if "test" in dirs:  # a held-out split must be a folder of its own
        test_key, test_name = dirs["test"]
        for split, (key, name) in dirs.items():
            if split != "test" and (root / name).resolve() == (root / test_name).resolve():
                does = "trains" if split == "train" else "validates"
                raise UserError(
                    f"{test_key}={test_name!r} is the folder the run {does} on ({key}={name!r}): a "
                    f"held-out test split must hold images that neither train nor validate, or its "
                    f"score is not held out. Give it a folder of its own, or drop {test_key}."
                )
    listed = {split: list_split(root, key, name) for split, (key, name) in dirs.items()}
    first, (classes, _) = next(iter(listed.items()))
    for split, (other, _) in listed.items():
        if other != classes:
            only_first = sorted(set(classes) - set(other))
            only_other = sorted(set(other) - set(classes))
            raise UserError(
                f"The splits of {str(root)!r} hold different classes: only in '{dirs[first][1]}': "
                f"{only_first}, only in '{dirs[split][1]}': {only_other}. The splits need the same "
                f"class folders."
            )
    samples = {split: listed[split][1] if split in listed else [] for split in ("train", "valid", "test")}
    base = root / dirs.get("train", dirs[first])[1]
    sources = {split: str(root / name) for split, (_, name) in dirs.items()}
    return Listing(classes, samples["train"], samples["valid"], samples["test"], base, sources)
