"""Image transforms for training and validation, built by timm's ``create_transform``.

Training: random resized crop to ``image_size``, flips, colour jitter, optional AutoAugment /
RandAugment and random erasing. Validation: resize and centre crop (``crop_pct`` of the
resized image; 1.0 keeps the whole image, right for pre-cropped faces). Both normalise with
``mean``/``std``. Every image is converted to RGB first by ``data.images.load_rgb``, whatever its
mode (grayscale, RGBA, palette, CMYK).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from timm.data import create_transform
from torchvision import transforms as T

from common.errors import UserError

AUTO_AUGMENT_EXAMPLES = (
    "rand-m9-mstd0.5-inc1 (RandAugment), augmix-m5-w4-d2 (AugMix), or an AutoAugment policy: "
    "original, originalr, v0, v0r, 3a"
)


def check_auto_augment(name: str | None) -> None:
    """Let timm parse ``dataset.auto_augment`` now, on no data: a wrong name is named before the
    scan, not when the first training batch is drawn."""
    if name is None:
        return
    try:
        create_transform(32, is_training=True, auto_augment=name)
    except (AssertionError, ValueError, KeyError, IndexError) as err:
        detail = f" ({err})" if str(err) else ""
        raise UserError(
            f"dataset.auto_augment={name!r} is not a policy timm knows{detail}. Use e.g. "
            f"{AUTO_AUGMENT_EXAMPLES}; or null for none."
        ) from None


class TransformSettings(Protocol):
    """The dataset settings a transform needs (an ImageData, or its typed config)."""

    image_size: int
    scale: Sequence[float] | None
    ratio: Sequence[float]
    hflip: float
    color_jitter: float
    auto_augment: str | None
    re_prob: float
    crop_pct: float
    interpolation: str
    mean: Sequence[float]
    std: Sequence[float]


def build_transform(data: TransformSettings, is_training: bool) -> T.Compose:
    """The training or validation transform for the settings in ``data``."""
    return create_transform(
        input_size=data.image_size,
        is_training=is_training,
        scale=tuple(data.scale) if data.scale is not None else None,  # None: only in validation
        ratio=tuple(data.ratio),
        hflip=data.hflip,
        color_jitter=data.color_jitter,
        auto_augment=data.auto_augment,
        re_prob=data.re_prob,
        crop_pct=data.crop_pct,
        interpolation=data.interpolation,
        mean=tuple(data.mean),
        std=tuple(data.std),
    )
