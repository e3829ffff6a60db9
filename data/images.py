"""Reading images robustly: any mode to RGB, huge JPEGs decoded small, unreadable files reported.

A corrupt or truncated file, or a file with an image extension that is no image, must cost a
line in the log, not a crash inside a loader worker. The dataset returns a marker for such a
file, ``collate_skipping_bad`` drops it from the batch, and ``CheckedLoader`` (in the main
process) warns once per file, counts it for the epoch summary, or stops with a clear message
when ``dataset.on_bad_image=error``.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision.datasets.folder import IMG_EXTENSIONS

from common.errors import UserError
from data.formats import MAX_IMAGE_PIXELS
from data.names import printable

log = logging.getLogger(__name__)
BAD_IMAGE_POLICIES = ("skip", "error")
# PIL's errors for unreadable files: OSError (truncated, unidentified), SyntaxError and
# ValueError (malformed headers), DecompressionBombError (absurdly many pixels).
READ_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


# The pixel limit is ours (``dataset.max_image_pixels``, checked in ``load_rgb`` from the header,
# before decoding), so PIL's own, which would fail the headers-only size probe too, is lifted.
Image.MAX_IMAGE_PIXELS = None


def load_rgb(path: str, target_size: int, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open ``path`` as an RGB image. 16-bit images are scaled to 8 bits; JPEGs far larger than
    ``target_size`` are decoded at a reduced scale (PIL's draft mode), so they never need the
    memory of their full resolution. An image of more than ``max_pixels`` pixels (None: no limit)
    is refused from its header, before decoding, as a decompression bomb: a small file that
    would unpack to gigabytes."""
    with Image.open(path) as img:
        width, height = img.size
        if max_pixels is not None and width * height > max_pixels:
            raise Image.DecompressionBombError(
                f"{width} x {height} = {width * height:,} pixels, over dataset.max_image_pixels={max_pixels}"
            )
        if img.format == "JPEG" and min(img.size) > 4 * target_size:
            img.draft("RGB", (2 * target_size, 2 * target_size))
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            pixels = np.asarray(img, dtype=np.int64)  # 16-bit samples in 32-bit storage
            img = Image.fromarray((pixels >> 8).clip(0, 255).astype(np.uint8), mode="L")
        return img.convert("RGB")


# What counts as an image: torchvision's extensions, plus the common ones it leaves out (GIF,
# ...) where this PIL can open them. PIL's stub formats (HDF5, GRIB, EPS without Ghostscript)
# are left out: files of those kinds are rarely images of a data set.
IMAGE_EXTENSIONS = tuple(
    sorted(
        set(IMG_EXTENSIONS)
        | {".gif", ".apng", ".jfif", ".jpe", ".avif", ".qoi", ".tga", ".ico", ".pbm", ".pnm", ".dib"}
        & set(Image.registered_extensions())
    )
)


# Files and folders that operating systems and archivers leave beside data: never images, never
# classes. macOS zips carry ``__MACOSX/`` and an AppleDouble ``._name`` beside every file (with
# the image's extension, but no image in it); Windows leaves Thumbs.db and desktop.ini.
SYSTEM_NAMES = frozenset(
    {"__macosx", "thumbs.db", "desktop.ini", "$recycle.bin", "system volume information"}
)
HIDDEN = "hidden or system"  # the key under which they are counted as ignored


def is_hidden(name: str) -> bool:
    """Whether a file or folder name is hidden (``.``-prefixed) or a system's litter (``__MACOSX``)."""
    return name.startswith(".") or name.lower() in SYSTEM_NAMES


def class_folders(directory: str, ignored: Counter | None = None) -> list[str]:
    """Sorted names of the sub-folders of ``directory`` that are not hidden or system folders
    (torchvision's order); ``ignored`` counts the hidden entries passed over under HIDDEN."""
    entries = list(os.scandir(directory))
    if ignored is not None and any(is_hidden(e.name) for e in entries):
        ignored[HIDDEN] += sum(is_hidden(e.name) for e in entries)
    return sorted(e.name for e in entries if e.is_dir() and not is_hidden(e.name))


def image_files(
    class_dir: str, extensions: tuple[str, ...] = IMAGE_EXTENSIONS, ignored: Counter | None = None
) -> tuple[list[str], list[str]]:
    """Files under ``class_dir`` with an image extension, each real file once; and what was passed over.

    Links are followed (a class folder may link to images kept elsewhere), but a folder reached
    again (a link to ``.`` loops in ``os.walk``) is not walked twice, a folder above the class
    folder (a link to a parent would bring in the other classes' images) is not walked at all,
    and a file reached again through another link is not counted twice: torchvision's own walk would
    multiply such a class, and with it LDAM's margins, the class weights and the sampler.
    Hidden and system files and folders (``is_hidden``) are passed over.
    Returns (paths in torchvision's order, repeats as found); ``ignored`` counts the other
    files by extension, and the hidden ones (files and folders) under ``HIDDEN``.
    """
    top = os.path.realpath(class_dir)
    seen_dirs: set[str] = set()
    seen_files: set[str] = set()
    paths: list[str] = []
    repeats: list[str] = []
    ignored = Counter() if ignored is None else ignored
    for root, dirs, files in os.walk(class_dir, followlinks=True):
        real = os.path.realpath(root)
        if real in seen_dirs or top.startswith(real.rstrip(os.sep) + os.sep):  # walked, or an ancestor
            repeats.append(root)
            dirs[:] = []  # already walked: do not descend again
            continue
        seen_dirs.add(real)
        ignored[HIDDEN] += sum(is_hidden(d) for d in dirs)
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        for name in sorted(files):
            path = os.path.join(root, name)
            if is_hidden(name):
                ignored[HIDDEN] += 1
                continue
            if not name.lower().endswith(extensions):
                ignored[os.path.splitext(name)[1].lower() or "(no extension)"] += 1
                continue
            # a plain file's real path is its real folder's plus its name: one lstat, not a realpath
            key = os.path.realpath(path) if os.path.islink(path) else os.path.join(real, name)
            if key in seen_files:
                repeats.append(path)
                continue
            seen_files.add(key)
            paths.append(path)
    if not ignored[HIDDEN]:
        del ignored[HIDDEN]
    # torchvision's order: by folder, then by name
    return sorted(paths, key=lambda p: (os.path.dirname(p), os.path.basename(p))), repeats


class ImageList(Dataset):
    """Images given as ``(path, class index)`` samples; unreadable files come back as
    ``(None, (path, reason))``.

    ``preload()`` decodes every image once into memory (uint8 arrays at their stored size):
    later epochs skip reading and decoding, and loader workers share the arrays copy-on-write.
    """

    cache: list[np.ndarray | str] | None = None

    def __init__(
        self,
        samples: list[tuple[str, int]],
        classes: list[str],
        loader: Callable[[str], Image.Image],
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        self.samples = list(samples)
        self.targets = [label for _, label in self.samples]
        self.classes, self.loader, self.transform = list(classes), loader, transform

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, index: int) -> Image.Image | str:
        """The RGB image at ``index``, or the reason it cannot be read."""
        if self.cache is not None:
            item = self.cache[index]
            return item if isinstance(item, str) else Image.fromarray(item)
        try:
            return self.loader(self.samples[index][0])
        except READ_ERRORS as err:
            return f"{type(err).__name__}: {err}"

    def preload(self) -> int:
        """Decode every image into memory; returns the bytes held."""
        self.cache = [self.read(i) for i in range(len(self.samples))]
        self.cache = [item if isinstance(item, str) else np.asarray(item) for item in self.cache]
        return sum(item.nbytes for item in self.cache if not isinstance(item, str))

    def __getitem__(self, index: int) -> tuple[Any, Any, int]:
        """(image, class index, ``index``): the index tells a batch's images apart whatever the
        sampler's order and whichever unreadable files were dropped (the error gallery)."""
        path, target = self.samples[index]
        image = self.read(index)
        if isinstance(image, str):
            return None, (path, image), index
        if self.transform is not None:
            image = self.transform(image)
        return image, target, index


def collate_skipping_bad(
    batch: list[tuple[Any, Any, int]],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, list]:
    """Collate the readable samples; return (images, targets, dataset indices, [(path, reason), ...])."""
    good = [item for item in batch if item[0] is not None]
    bad = [item[1] for item in batch if item[0] is None]
    if not good:
        return None, None, None, bad
    images, targets, indices = default_collate(good)
    return images, targets, indices, bad


class CheckedLoader:
    """A DataLoader of ``collate_skipping_bad`` batches, iterated as (images, targets).

    ``skipped`` lists the files skipped during the current (or last) pass; ``indices`` holds the
    dataset indices of the batch last yielded.
    """

    def __init__(self, loader: DataLoader, on_bad_image: str) -> None:
        self.loader = loader
        self.on_bad_image = on_bad_image
        self.skipped: list[str] = []
        self.warned: set[str] = set()
        self.indices: torch.Tensor | None = None

    @property
    def generator(self) -> torch.Generator | None:
        return self.loader.generator

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.skipped = []
        for images, targets, indices, bad in self.loader:
            for path, reason in bad:
                if self.on_bad_image == "error":
                    raise UserError(
                        f"{printable(path)} could not be read as an image ({reason}). Fix or remove the "
                        f"file, or set dataset.on_bad_image=skip to skip such files with a warning."
                    )
                if path not in self.warned:
                    log.warning("Skipping unreadable image %s (%s)", printable(path), reason)
                    self.warned.add(path)
                self.skipped.append(path)
            if images is not None:
                self.indices = indices
                yield images, targets
