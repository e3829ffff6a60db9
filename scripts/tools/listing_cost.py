"""What listing and checking a large collection costs: ``benchmark.py measure=listing``.

    python scripts/benchmark.py measure=listing [images=100000] [classes=1000] [repeats=3]

Writes ``images`` valid 1x1 PNG files over ``classes`` class folders (the sizes of the classes
fall off geometrically, 20 to 1, as long-tailed data does) and a label file listing them, then
times, in one process and alternating: torchvision's ImageFolder on the tree (the reference),
``ImageData`` on the tree and on the label file, each with a 0.1 validation split carved, and
the start-up class summary. Prints the medians, the ratios to torchvision, and the summary block
(the goal: seconds at 100,000 files, and one readable block at 1,000 classes).
"""

from __future__ import annotations

import io
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image
from torchvision.datasets import ImageFolder

from data.listing import class_summary
from data.loaders import ImageData
from data.settings import ImageFolderSettings, LabelFileSettings

from tools.settings import ListingSettings


def class_sizes(images: int, classes: int) -> list[int]:
    """``images`` split over ``classes`` with sizes falling geometrically by a factor of 20."""
    weights = [20 ** (-i / max(1, classes - 1)) for i in range(classes)]
    sizes = [max(1, int(images * w / sum(weights))) for w in weights]
    for i in range(images - sum(sizes)):  # what rounding down left over, one each from the head
        sizes[i % classes] += 1
    return sizes


def write_collection(root: Path, images: int, classes: int) -> None:
    """The tree ``root/train/<class>/`` and ``root/labels.csv`` listing the same files."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    png = buffer.getvalue()
    rows = ["path,label"]
    for index, size in enumerate(class_sizes(images, classes)):
        name = f"class_{index:04d}"
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for i in range(size):
            (folder / f"{i:06d}.png").write_bytes(png)
            rows.append(f"train/{name}/{i:06d}.png,{name}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(args: ListingSettings) -> None:
    folder = Path(args.folder) if args.folder else Path(tempfile.mkdtemp(prefix="listing_"))
    try:
        start = time.perf_counter()
        write_collection(folder, args.images, args.classes)
        print(
            f"wrote {args.images:,} images in {args.classes:,} classes in {time.perf_counter() - start:.1f} s"
        )
        common = {"root": str(folder), "image_size": 32, "num_workers": 0, "val_fraction": 0.1}
        ways = {
            "torchvision ImageFolder (reference)": lambda: ImageFolder(str(folder / "train")),
            "ImageData, tree": lambda: ImageData(ImageFolderSettings(**common)),
            "ImageData, label file": lambda: ImageData(LabelFileSettings(labels="labels.csv", **common)),
        }
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.repeats):
            for name, way in ways.items():
                times[name].append(timed(way))
        data = ImageData(ImageFolderSettings(**common))
        columns = data.counts_by_split()
        summary_time = timed(lambda: class_summary(data.class_names, columns))
        reference = statistics.median(times["torchvision ImageFolder (reference)"])
        print(f"\n{'':38} {'median s':>9} {'ratio':>6}")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"{name:38} {median:9.2f} {median / reference:6.2f}")
        block = class_summary(data.class_names, columns)
        lines = len(block.splitlines())
        print(f"\nstart-up class summary ({summary_time * 1000:.0f} ms, {lines} lines):\n{block}")
    finally:
        if not args.folder:
            shutil.rmtree(folder, ignore_errors=True)
