"""A folder made read-only for the length of a test: a read-only bind mount (the way a share or a
snapshot is read-only, even for root), or without write permission where the tests run as
another user; skipped where neither can be had."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` (and all below it) read-only inside the block."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")] if p.is_dir()}
        for path in modes:
            path.chmod(0o555)
        try:
            yield folder
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    bound = mount("--bind", str(folder), str(folder))
    if not (bound and mount("-o", "remount,bind,ro", str(folder))):
        if bound:
            subprocess.run(["umount", str(folder)], check=True)
        pytest.skip("no read-only bind mount here (mount needs CAP_SYS_ADMIN)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
