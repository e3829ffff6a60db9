"""Turn the official RAF-DB basic-emotion download into ImageFolder trees.

    python scripts/prepare_rafdb.py src=RAF-DB/basic dst=RAF-DB/RAF

``src`` holds ``EmoLabel/list_patition_label.txt`` and ``Image/aligned/``; ``dst`` receives
``train/<emotion>/`` and ``valid/<emotion>/`` (the official test split), by hard links where
the file system allows and copies otherwise. The source is checked whole before anything is
written; re-running is safe. Then: ``python train.py experiment=rafdb_ldam dataset.root=DST``.
"""

from __future__ import annotations

import common.startup_signals  # noqa: F401  # isort: skip  (first: a Ctrl-C while libraries load)
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omegaconf import MISSING

from data.rafdb import EMOTIONS, prepare_rafdb

from lib.app import parse_settings, run_app


@dataclass
class PrepareSettings:
    src: str = MISSING  # the download: EmoLabel/list_patition_label.txt and Image/aligned/
    dst: str = MISSING  # where train/<emotion>/ and valid/<emotion>/ go


def main(args: PrepareSettings | Mapping[str, Any]) -> None:
    cfg = parse_settings(PrepareSettings, args, "prepare_rafdb")
    counts = prepare_rafdb(Path(cfg.src), Path(cfg.dst))
    print(f"{'class':<10} {'train':>7} {'valid':>7}")
    for emotion in EMOTIONS:
        print(f"{emotion:<10} {counts['train'][emotion]:>7} {counts['valid'][emotion]:>7}")
    print(f"{'total':<10} {sum(counts['train'].values()):>7} {sum(counts['valid'].values()):>7}")
    print(f"ImageFolder trees in {cfg.dst}/train and {cfg.dst}/valid")


if __name__ == "__main__":
    run_app(main, PrepareSettings, "prepare_rafdb", __doc__)
