"""Image transforms for training and validation, built by timm's ``create_transform``.

Training: random resized crop to ``image_size``, flips, colour jitter, optional AutoAugment /
RandAugment and random erasing. Validation: resize and centre crop (``crop_pct`` of the
resized image; 1.0 keeps the whole image, right for pre-cropped faces). Both normalise with
``mean``/``std``. Every image is converted to RGB first by ``data.images.load_rgb``, whatever its
mode (grayscale, RGBA, palette, CMYK).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from timm.data import create_transform
from torchvision import transforms as T

if TYPE_CHECKING:
    from data.folders import ImageFolderData


def build_transform(data: ImageFolderData, is_training: bool) -> T.Compose:
    """The training or validation transform for the settings in ``data``."""
    return create_transform(
        input_size=data.image_size,
        is_training=is_training,
        scale=tuple(data.scale),
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
