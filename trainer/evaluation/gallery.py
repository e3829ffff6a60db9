"""The error gallery: each true class's most confident mistakes, as one picture.

"Which images of my rare classes does it miss?" is the first question on imbalanced data, and a
confusion matrix cannot answer it. While a model is validated, ``Predictions`` keeps each
image's predicted class and that class's probability by dataset index (a few numbers per image,
summed across DDP ranks). ``confident_mistakes`` picks, per true class, the wrong predictions
made with the highest probability; ``gallery_image`` draws the classes of lowest recall first,
each row a class, each thumbnail captioned with what the model said and how sure it was.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

from common.atomic import atomic_open
from data.images import READ_ERRORS, load_rgb
from data.names import shortened
from trainer.evaluation.figures import GREY, INK, WHITE, font

ROWS = 8  # true classes shown, lowest recall first: more would be hundreds of thumbnails
PER_CLASS = 6  # mistakes shown per class, most confident first
THUMB = 96  # pixels
LABEL_WIDTH = 190


class Predictions:
    """Each evaluated image's predicted class and probability, by dataset index."""

    def __init__(self, size: int, device: torch.device) -> None:
        self.state = torch.zeros(3, size, dtype=torch.float64, device=device)  # prob, class, seen

    def add(self, indices: torch.Tensor, outputs: torch.Tensor) -> None:
        """One batch: ``outputs`` (N, C) are the logits whose softmax is reported."""
        prob, pred = outputs.float().softmax(dim=1).max(dim=1)
        at = indices.to(self.state.device)
        self.state[0, at], self.state[1, at], self.state[2, at] = prob.double(), pred.double(), 1.0

    def synced(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probability, predicted class, seen) of every image: each rank saw its own share."""
        state = self.state.clone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(state)
        prob, pred, seen = state.cpu().numpy()
        return prob, pred.astype(np.int64), seen > 0


def confident_mistakes(
    targets: Sequence[int], pred: np.ndarray, prob: np.ndarray, seen: np.ndarray, per_class: int = PER_CLASS
) -> dict[int, list[int]]:
    """Per true class, the indices of its wrongly predicted images, most confident first."""
    targets_ = np.asarray(targets)
    wrong = np.flatnonzero(seen & (pred != targets_))
    order = wrong[np.argsort(-prob[wrong], kind="stable")]
    picks: dict[int, list[int]] = {}
    for index in order.tolist():
        chosen = picks.setdefault(int(targets_[index]), [])
        if len(chosen) < per_class:
            chosen.append(index)
    return picks


Painter = Callable[[str, int], Image.Image]  # (path, predicted class) -> the picture to show


def thumbnail(path: str, predicted: int, paint: Painter | None = None) -> Image.Image:
    """The image at ``path`` (or ``paint``'s picture of it, a class-activation map over it) fitted
    into a THUMB square; grey, with a note, if unreadable."""
    try:
        image = paint(path, predicted) if paint is not None else load_rgb(path, target_size=THUMB)
    except READ_ERRORS:
        image = Image.new("RGB", (THUMB, THUMB), GREY)
        ImageDraw.Draw(image).text((4, THUMB // 2), "unreadable", fill=INK, font=font(11))
        return image
    return ImageOps.pad(image, (THUMB, THUMB), color=WHITE)


@dataclass(frozen=True)
class GalleryRow:
    """One true class of the gallery: its name, recall, images, and its mistakes shown."""

    name: str
    recall: float
    images: int
    missed: int
    picks: list[int]


def gallery_rows(
    targets: Sequence[int],
    pred: np.ndarray,
    prob: np.ndarray,
    seen: np.ndarray,
    class_names: Sequence[str],
    rows: int = ROWS,
) -> list[GalleryRow]:
    """The classes with mistakes, lowest recall first (at most ``rows``)."""
    picks = confident_mistakes(targets, pred, prob, seen)
    targets_ = np.asarray(targets)
    out = []
    for label, chosen in picks.items():
        mine = seen & (targets_ == label)
        missed = int((mine & (pred != label)).sum())
        recall = float(1 - missed / mine.sum())
        out.append(GalleryRow(class_names[label], recall, int(mine.sum()), missed, chosen))
    return sorted(out, key=lambda r: (r.recall, r.name))[:rows]


def gallery_image(
    rows: list[GalleryRow],
    paths: Sequence[str],
    pred: np.ndarray,
    prob: np.ndarray,
    class_names: Sequence[str],
    title: str,
    paint: Painter | None = None,
) -> Image.Image:
    """The picture: a heading, then one row per class, thumbnails captioned "-> predicted, p"."""
    heading, caption, label = font(14), font(11), font(12)
    cell_w, cell_h = THUMB + 8, THUMB + 30
    width = LABEL_WIDTH + PER_CLASS * cell_w + 8
    lines = textwrap.wrap(title, width=max(40, width // 8))
    top = 10 + 18 * len(lines) + 8
    height = top + max(1, len(rows)) * cell_h + 8
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((8, 10 + 18 * i), line, fill=INK, font=heading)
    if not rows:
        draw.text((8, top + 8), "no mistakes", fill=INK, font=label)
    for r, row in enumerate(rows):
        y = top + r * cell_h
        draw.text((8, y + 4), shortened(row.name, 24), fill=INK, font=label)
        draw.text((8, y + 22), f"recall {row.recall:.0%}", fill=INK, font=caption)
        draw.text((8, y + 38), f"{row.missed} of {row.images} missed", fill=INK, font=caption)
        for c, index in enumerate(row.picks):
            x = LABEL_WIDTH + c * cell_w
            image.paste(thumbnail(paths[index], int(pred[index]), paint), (x, y))
            said = shortened(class_names[int(pred[index])], 14)
            draw.text((x, y + THUMB + 2), f"→ {said}", fill=INK, font=caption)
            draw.text((x, y + THUMB + 15), f"p {prob[index]:.2f}", fill=INK, font=caption)
    return image


def save_png(picture: Image.Image, path: Path) -> None:
    """``picture`` as a PNG file at ``path``, written whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        picture.save(f, format="PNG")


def gallery_title(prefix: str, epoch: int) -> str:
    """The heading of a training run's gallery of ``prefix`` (``val``, ``val_ema``) at ``epoch``."""
    weights = "EMA" if prefix == "val_ema" else "raw"
    return (
        f"{prefix}, epoch {epoch}, {weights} weights: each true class's most confident mistakes, "
        f"lowest recall first; p = softmax probability of the predicted class (T 1, no adjustment)"
    )


def gallery_picture(
    synced: tuple[np.ndarray, np.ndarray, np.ndarray],
    samples: Sequence[tuple[str, int]],
    class_names: Sequence[str],
    title: str,
    paint: Painter | None = None,
) -> Image.Image:
    """The gallery of ``Predictions.synced()`` over ``samples`` (the evaluated dataset's);
    ``paint`` draws each thumbnail (class-activation maps), the image itself by default."""
    prob, pred, seen = synced
    targets = [label for _, label in samples]
    rows = gallery_rows(targets, pred, prob, seen, class_names)
    return gallery_image(rows, [path for path, _ in samples], pred, prob, class_names, title, paint)
