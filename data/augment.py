"""Augmentation settings chosen from what the images are, and a warning where a choice hurts.

The generic random-resized-crop scale (0.08, 1) comes from ImageNet (Szegedy et al., CVPR 2015,
"Going Deeper with Convolutions"), whose photos are hundreds of pixels wide: a crop of 8% of
such a photo still shows an object. A crop of 8% of a 28-pixel digit is an 8x8 blur of a few
strokes. Benchmarks of small images train with mild crops instead (CIFAR's pad-4 random crop
keeps about 60% to 100% of the image). So ``dataset.scale=null`` (the default of
``dataset=imagefolder``) looks at the training images' native size, the median shorter side of
a sample of them read from the file headers, and picks (0.35, 1) for images under 64 pixels,
(0.08, 1) otherwise; an explicit scale is kept, with a warning when it crops small images hard.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from typing import Any

from PIL import Image

log = logging.getLogger(__name__)

SMALL_IMAGE = 64  # native shorter side, in pixels, below which images count as small
SMALL_SCALE = [0.35, 1.0]
LARGE_SCALE = [0.08, 1.0]
HARD_CROP = 0.2  # smallest crop fraction of a small image that still keeps its content
ENLARGED = 4  # training at this many times the images' own size or more is said
SAMPLE = 64  # images whose headers are read to estimate the native size


def native_size(paths: Sequence[str]) -> int | None:
    """Median shorter side of up to ``SAMPLE`` images spread over ``paths`` (None if none opens)."""
    step = max(1, len(paths) // SAMPLE)
    sides = []
    for path in list(paths)[::step][:SAMPLE]:
        try:
            with Image.open(path) as img:  # reads the header only
                sides.append(min(img.size))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            continue  # unreadable files are reported by the loader, not here
    return int(statistics.median(sides)) if sides else None


def choose_scale(scale: list[float] | None, native: int | None) -> list[float]:
    """The crop scale to train with: the given one, or one chosen from the native size."""
    small = native is not None and native < SMALL_IMAGE
    if scale is None:
        return list(SMALL_SCALE if small else LARGE_SCALE)
    if small and scale[0] < HARD_CROP:
        log.warning(
            "dataset.scale=%s crops as little as %.0f%% of images that are only about %d px: about "
            "%d px of the original survive in the smallest crops, which costs accuracy and can stall "
            "training (LDAM in particular). For small images try dataset.scale=%s (or null to choose).",
            list(scale),
            100 * scale[0],
            native,
            int(native * scale[0] ** 0.5),
            SMALL_SCALE,
        )
    return list(scale)


def say_training(settings: Any, scale: Sequence[float], native: int | None, chosen: bool) -> None:
    """One start-up line with what training images go through (``settings``: the dataset's): the
    size they train at against their own, the crops (``chosen``: by ``dataset.scale=null``), flips,
    colour jitter, auto-augment and erasing; a warning when small images are enlarged many times."""
    why = (
        f" (dataset.scale=null: {SMALL_SCALE} below {SMALL_IMAGE} px, {LARGE_SCALE} above)" if chosen else ""
    )
    extra = f", auto-augment {settings.auto_augment}" if settings.auto_augment else ""
    extra += f", random erasing {settings.re_prob:g}" if settings.re_prob else ""
    log.info(
        "Training at %d px from images of about %s px (median shorter side): random-resized crops of "
        "%s of the image%s, horizontal flips %s, colour jitter %g%s",
        settings.image_size,
        native if native is not None else "?",
        list(scale),
        why,
        f"{settings.hflip:.0%} of the time" if settings.hflip else "off",
        settings.color_jitter or 0,
        extra,
    )
    if native is not None and settings.image_size >= ENLARGED * native:
        log.warning(
            "The training images are about %d px and train at dataset.image_size=%d, %.0f times enlarged: "
            "every image costs the compute of a %d-px one and carries no more detail. A model trained "
            "from scratch can train near their own size (dataset.image_size=%d); a pretrained one may "
            "want the input size it was trained at.",
            native,
            settings.image_size,
            settings.image_size / native,
            settings.image_size,
            max(32, 8 * round(native / 8)),
        )
