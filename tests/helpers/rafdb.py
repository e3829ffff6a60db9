"""RAF-DB's official layout, made up: the list file and the aligned images of a few entries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import write_image

ENTRIES = [(f"train_{i:05d}.jpg", label) for i, label in enumerate([4] * 6 + [7] * 3 + [1, 2, 3, 5, 6, 2], 1)]


ENTRIES += [(f"test_{i:04d}.jpg", label) for i, label in enumerate([1, 2, 3, 4, 5, 6, 7, 4], 1)]


def official_tree(src: Path, entries=ENTRIES, extra_lines: str = "") -> Path:
    rng = np.random.default_rng(0)
    (src / "EmoLabel").mkdir(parents=True, exist_ok=True)
    lines = "".join(f"{name} {label}\n" for name, label in entries) + extra_lines
    (src / "EmoLabel" / "list_patition_label.txt").write_text(lines)
    for name, _ in entries:
        stem = name.removesuffix(".jpg")
        write_image(src / "Image" / "aligned" / f"{stem}_aligned.jpg", rng, size=24)
    return src
