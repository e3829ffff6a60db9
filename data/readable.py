"""Which listed images open, judged from their headers before any training, so that every count
(the class prior, LDAM's margins, the samplers, classes.csv, the shot groups) is of images that
load. A file whose header does not open (not an image despite its extension, empty, damaged at
the start) or that is over ``dataset.max_image_pixels`` is left out of every split, named once;
``dataset.on_bad_image=error`` refuses it. A class left without training images is refused. A
file whose header opens but whose data is damaged (a truncated JPEG) is found only when it is
decoded, and skipped then (``data.images.CheckedLoader``).

Reading a header costs about 55 microseconds a file on this 2-core machine's local disk (5.5 s
for 100,000 images); threads were tried and were twice as slow there (PIL's parsing holds the
interpreter).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from PIL import Image, UnidentifiedImageError

from common.errors import UserError
from data.images import READ_ERRORS
from data.listing import Listing
from data.names import printable
from data.split import Sample

log = logging.getLogger(__name__)
NAMED = 10  # files named in a message; the rest are counted


def header_problem(path: str, max_pixels: int | None) -> str | None:
    """Why ``path`` will not load as an image, from its header alone, or None."""
    try:
        with Image.open(path) as img:
            width, height = img.size
    except UnidentifiedImageError:
        return "not an image PIL can read"
    except READ_ERRORS as err:  # PIL's text often repeats the path: the kind of error says enough then
        said = str(err)
        return type(err).__name__ if path in said or repr(path) in said else f"{type(err).__name__}: {said}"
    if max_pixels is not None and width * height > max_pixels:
        return f"{width} x {height} = {width * height:,} pixels, over dataset.max_image_pixels={max_pixels}"
    return None


def unopenable(samples: Sequence[Sample], max_pixels: int | None) -> dict[str, str]:
    """{path: reason} for the samples whose headers do not open."""
    problems = {path: header_problem(path, max_pixels) for path in sorted({path for path, _ in samples})}
    return {path: reason for path, reason in problems.items() if reason}


def named(bad: dict[str, str]) -> str:
    shown = [f"{printable(path)} ({printable(reason)})" for path, reason in list(bad.items())[:NAMED]]
    more = f"; and {len(bad) - NAMED} more" if len(bad) > NAMED else ""
    return "; ".join(shown) + more


def drop_unopenable(listing: Listing, on_bad_image: str, max_pixels: int | None) -> Listing:
    """``listing`` without the images whose headers do not open, said once (refused with
    ``on_bad_image="error"``); a class left without training images is refused."""
    bad = unopenable([*listing.train, *listing.val, *listing.test], max_pixels)
    if not bad:
        return listing
    if on_bad_image == "error":
        raise UserError(
            f"{len(bad)} listed image(s) cannot be opened: {named(bad)}. Fix or remove them, or set "
            f"dataset.on_bad_image=skip to leave them out with a warning."
        )
    kept = {
        split: [s for s in getattr(listing, split) if s[0] not in bad] for split in ("train", "val", "test")
    }
    before, after = listing.counts(listing.train), listing.counts(kept["train"])
    lost = [c for c, (n, m) in enumerate(zip(before, after, strict=True)) if n and not m]
    if lost:
        names = ", ".join(printable(listing.classes[c]) for c in lost[:NAMED])
        files = {path: bad[path] for path, label in listing.train if label in lost and path in bad}
        raise UserError(
            f"No training image of class(es) {names} can be opened: {named(files)}. Fix or remove "
            f"those files, or remove the class."
        )
    log.warning(
        "%d image(s) cannot be opened and are left out of training, validation and every count: %s",
        len(bad),
        named(bad),
    )
    return replace(listing, **kept)
