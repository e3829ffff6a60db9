"""The confusion matrix as one compact picture, drawn with Pillow.

Rows are the true classes, columns the predicted ones. Each cell is coloured by its share of
its row (each row sums to 100%, the diagonal is that class's recall; ColorBrewer's 9-class
"Blues", white to dark blue) and a non-empty cell shows that share in %; each row's label
carries its number of images. TensorBoard shows it as ``val/confusion_matrix`` (and
``val_ema/...``) each epoch, ``scripts/evaluate.py`` saves it at twice the size as
``confusion_matrix.png``.

Pillow, which torchvision already loads, draws it in a few milliseconds. matplotlib, which
drew it before, took 0.7 s to load and 0.07 s a figure: on a 2-core CPU a tenth of a short run.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from data.names import shortened

# ColorBrewer "Blues", 9 classes (Cynthia Brewer, colorbrewer2.org): the colour of shares 0, 1/8, ..., 1
BLUES = np.array(
    [
        (247, 251, 255),
        (222, 235, 247),
        (198, 219, 239),
        (158, 202, 225),
        (107, 174, 214),
        (66, 146, 198),
        (33, 113, 181),
        (8, 81, 156),
        (8, 48, 107),
    ],
    dtype=float,
)
INK, WHITE, GREY = (0, 0, 0), (255, 255, 255), (160, 160, 160)


@functools.cache
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans (wide Unicode coverage: class names in any Latin, Greek or Cyrillic script) at
    ``size`` pixels: matplotlib's copy (found, not imported), else the system's, else Pillow's own."""
    spec = importlib.util.find_spec("matplotlib")
    places = (
        [
            Path(p) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
            for p in (spec.submodule_search_locations or [])
        ]
        if spec
        else []
    )
    for place in [*map(str, places), "DejaVuSans.ttf"]:
        try:
            return ImageFont.truetype(place, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def blues(share: np.ndarray) -> np.ndarray:
    """The colour (..., 3) uint8 of each share in [0, 1], interpolated between BLUES' stops."""
    stops = np.linspace(0.0, 1.0, len(BLUES))
    channels = [np.interp(np.clip(share, 0.0, 1.0), stops, BLUES[:, k]) for k in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def text_image(text: str, face: ImageFont.FreeTypeFont, angle: float) -> Image.Image:
    """``text`` as a mask (L: 255 where ink), turned ``angle`` degrees anticlockwise."""
    left, top, right, bottom = face.getbbox(text)
    mask = Image.new("L", (max(right - left, 1), max(bottom - top, 1)))
    ImageDraw.Draw(mask).text((-left, -top), text, fill=255, font=face)
    return mask.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC) if angle else mask


def confusion_image(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str = "", scale: int = 1
) -> Image.Image:
    """The picture (RGB) of ``matrix``. At scale 1, cells of 30 pixels shrink to 18 for many
    classes: up to a dozen classes it is at most about 340 pixels wide, the width of TensorBoard's
    image card."""
    class_names = [shortened(name) for name in class_names]  # the full names are in the files
    counts = np.asarray(matrix, dtype=np.int64)
    n = len(class_names)
    rows = counts.sum(axis=1)
    share = np.divide(counts, rows[:, None], out=np.zeros(counts.shape), where=rows[:, None] > 0)
    cell, pad = max(18, min(30, 210 // n)) * scale, 5 * scale
    text, small = font(11 * scale), font((9 if cell < 24 * scale else 10) * scale)
    line = text.getbbox("Ag")[3]
    row_labels = [f"{name} ({int(r)})" for name, r in zip(class_names, rows, strict=True)]
    column_labels = [text_image(name, small, 45) for name in class_names]
    corner = "true \\ predicted"
    left = pad + int(max(text.getlength(label) for label in [*row_labels, corner])) + pad
    top, side = 2 * line + 3 * pad, cell * n
    heading = f"{title}: % of each true class" if title else "% of each true class"
    width = max(left + side + pad, int(text.getlength(heading)) + 2 * pad)
    image = Image.new("RGB", (width, top + side + max(mask.height for mask in column_labels) + pad), WHITE)
    draw = ImageDraw.Draw(image)
    draw.text((pad, pad), heading, fill=INK, font=text, anchor="lt")
    draw.text((left - pad, top - pad), corner, fill=INK, font=text, anchor="rs")

    image.paste(Image.fromarray(np.repeat(np.repeat(blues(share), cell, axis=0), cell, axis=1)), (left, top))
    for i, j in zip(*np.nonzero(counts), strict=True):
        centre = (left + j * cell + cell // 2, top + i * cell + cell // 2)
        ink = WHITE if share[i, j] > 0.5 else INK
        draw.text(centre, f"{100 * share[i, j]:.0f}", fill=ink, font=small, anchor="mm")
    draw.rectangle((left - 1, top - 1, left + side, top + side), outline=GREY)
    for i, label in enumerate(row_labels):  # right-aligned against the grid
        draw.text((left - pad, top + i * cell + cell // 2), label, fill=INK, font=text, anchor="rm")
    for j, mask in enumerate(column_labels):  # each label ends under its column, reading upwards
        x = left + j * cell + cell // 2 + small.getbbox("A")[3] // 2
        image.paste(INK, (x - mask.width, top + side + pad // 2), mask)
    return image
