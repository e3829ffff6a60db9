"""Turn the official RAF-DB basic-emotion download into ImageFolder trees.

    python scripts/prepare_rafdb.py src=RAF-DB/basic dst=RAF-DB/RAF

``src`` holds ``EmoLabel/list_patition_label.txt`` and ``Image/aligned/``; ``dst`` receives
``train/<emotion>/`` and ``valid/<emotion>/`` (the official test split), by hard links where
the file system allows and copies otherwise. The source is checked whole before anything is
written; re-running is safe. Then: ``python train.py experiment=rafdb_ldam dataset.root=DST``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from keyvalue import run_script

from data.rafdb import EMOTIONS, prepare_rafdb


def main(args: dict[str, str]) -> None:
    counts = prepare_rafdb(Path(args["src"]), Path(args["dst"]))
    print(f"{'class':<10} {'train':>7} {'valid':>7}")
    for emotion in EMOTIONS:
        print(f"{emotion:<10} {counts['train'][emotion]:>7} {counts['valid'][emotion]:>7}")
    print(f"{'total':<10} {sum(counts['train'].values()):>7} {sum(counts['valid'].values()):>7}")
    print(f"ImageFolder trees in {args['dst']}/train and {args['dst']}/valid")


if __name__ == "__main__":
    run_script(main, {"src": None, "dst": None}, "prepare_rafdb")
