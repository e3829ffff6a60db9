"""Mixup (Zhang et al., ICLR 2018) and CutMix (Yun et al., ICCV 2019) settings, checked up front.

timm's ``Mixup`` builds the batch function; it accepts some wrong values without a word (an
unknown ``mode`` mixes whole batches, a negative alpha turns the method off). They are refused
here, before any data is read, naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from common.errors import UserError

MODES = ("batch", "pair", "elem")


def check_mixup(
    mixup_alpha: float,
    cutmix_alpha: float,
    cutmix_minmax: Sequence[float] | None,
    prob: float,
    switch_prob: float,
    mode: str,
    label_smoothing: float,
) -> None:
    """UserError naming the first ``mixup.*`` value that timm would misread."""
    for key, value in (("prob", prob), ("switch_prob", switch_prob), ("label_smoothing", label_smoothing)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"mixup.{key}={value} is a probability: use a value in [0, 1].")
    for key, value in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
        if not value >= 0.0:
            raise UserError(f"mixup.{key}={value} must be >= 0 (0 turns that method off).")
    if mixup_alpha == 0.0 and cutmix_alpha == 0.0 and cutmix_minmax is None:
        raise UserError(
            "mixup.mixup_alpha=0 and mixup.cutmix_alpha=0 turn both methods off, so nothing would be "
            "mixed. Use mixup=none, or a positive alpha."
        )
    if mode not in MODES:
        raise UserError(f"mixup.mode={mode!r} is not one of: {', '.join(MODES)}.")
    if cutmix_minmax is not None and not (
        len(cutmix_minmax) == 2 and 0.0 < cutmix_minmax[0] <= cutmix_minmax[1] <= 1.0
    ):
        raise UserError(
            f"mixup.cutmix_minmax={list(cutmix_minmax)} must be [min, max] box fractions with "
            f"0 < min <= max <= 1, or null."
        )


def check_mixup_group(mixup: Mapping[str, Any], batch_size: int) -> None:
    """The ``mixup`` config group and the batch it pairs images of, checked before any data is read."""
    keys = ("mixup_alpha", "cutmix_alpha", "cutmix_minmax", "prob", "switch_prob", "mode", "label_smoothing")
    check_mixup(*(mixup[k] for k in keys))
    check_even_batch(batch_size)


def check_even_batch(batch_size: int) -> None:
    """Mixup/CutMix pairs the images of a batch: refuse an odd batch size, naming the key."""
    if batch_size % 2:
        raise UserError(
            f"Mixup/CutMix pairs the images of a batch, so dataset.batch_size must be even "
            f"(got {batch_size}); or turn Mixup off with mixup=none."
        )
