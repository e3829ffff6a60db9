"""RAF-DB, the Real-world Affective Faces database (Li, Deng and Du, CVPR 2017), basic emotions.

Seven classes of aligned 100x100 faces. The official release lists every image with its label
in ``EmoLabel/list_patition_label.txt`` (spelled so), lines like ``train_00001.jpg 4``, and
keeps the faces in ``Image/aligned/<name>_aligned.jpg``; labels 1-7 are the emotions below.
``prepare_rafdb`` turns that into ImageFolder trees (``train/<emotion>/``, and the official
test split as ``valid/<emotion>/``). Some redistributions name the class folders ``1`` to
``7``, others by emotion; ``RafDBData`` reports emotion names either way.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

from common.errors import UserError

EMOTIONS = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"
IMAGE_DIR = Path("Image") / "aligned"
SPLITS = {"train": "train", "test": "valid"}  # official prefix -> our split folder


def emotion_name(folder: str) -> str:
    """The emotion of a class folder named ``1``-``7`` (official label) or by the emotion itself."""
    if folder.isdigit() and 1 <= int(folder) <= len(EMOTIONS):
        return EMOTIONS[int(folder) - 1]
    return folder


def read_labels(src: Path) -> dict[str, int]:
    """``image name -> label`` from the official label file; UserError naming any bad line."""
    path = src / LABEL_FILE
    if not path.is_file():
        raise UserError(f"{path} not found: src must be the RAF-DB basic folder holding {LABEL_FILE}.")
    labels: dict[str, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(EMOTIONS):
            raise UserError(f"{path}, line {number}: {line!r} is not '<image> <label 1-7>'.")
        name = parts[0]
        if name.split("_")[0] not in SPLITS:
            raise UserError(f"{path}, line {number}: {name!r} starts neither with 'train_' nor 'test_'.")
        if name in labels:
            raise UserError(f"{path}, line {number}: {name!r} is listed twice.")
        labels[name] = int(parts[1])
    if not labels:
        raise UserError(f"{path} lists no images.")
    return labels


def aligned_name(name: str) -> str:
    """``train_00001.jpg`` -> ``train_00001_aligned.jpg``."""
    stem, ext = os.path.splitext(name)
    return f"{stem}_aligned{ext}"


def check_images(src: Path, labels: dict[str, int]) -> None:
    """Every labelled image exists and every aligned image is labelled."""
    folder = src / IMAGE_DIR
    if not folder.is_dir():
        raise UserError(f"{folder} not found: src must hold the aligned faces in {IMAGE_DIR}/.")
    present = {e.name for e in os.scandir(folder) if e.is_file()}
    expected = {aligned_name(n) for n in labels}
    missing, unlabelled = sorted(expected - present), sorted(present - expected)
    if missing:
        raise UserError(
            f"{len(missing)} image(s) in {src / LABEL_FILE} are not in {folder} (e.g. {missing[:3]}): "
            f"the download is incomplete."
        )
    if unlabelled:
        raise UserError(
            f"{len(unlabelled)} file(s) in {folder} have no label in {src / LABEL_FILE} "
            f"(e.g. {unlabelled[:3]}): label file and images do not belong together."
        )


def place(source: Path, target: Path) -> bool:
    """Hard-link (or copy, across file systems) ``source`` to ``target``; False if already there."""
    if target.exists():
        if os.path.samefile(source, target) or target.stat().st_size == source.stat().st_size:
            return False
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    return True


def prepare_rafdb(src: Path, dst: Path) -> dict[str, Counter]:
    """Write ``dst/train/<emotion>/`` and ``dst/valid/<emotion>/``; return the per-split class counts.

    Checks the whole source before writing anything; re-running it places only what is missing.
    """
    labels = read_labels(src)
    check_images(src, labels)
    counts: dict[str, Counter] = {split: Counter() for split in SPLITS.values()}
    for name, label in sorted(labels.items()):
        split, emotion = SPLITS[name.split("_")[0]], EMOTIONS[label - 1]
        place(src / IMAGE_DIR / aligned_name(name), dst / split / emotion / aligned_name(name))
        counts[split][emotion] += 1
    return counts
