"""Files that are either wholly written or not there at all.

The content goes to a temporary file in the same folder, is fsynced, and ``os.replace`` then
puts it in place in one step: a crash, a signal or a full disk mid-write leaves the previous
file (or no file) and no temporary one. Used for checkpoints and the scripts' outputs.

``atomic_link`` puts a second name on a file so written, in one step too: since every write
replaces the file with a new one, never changing it in place, the second name keeps the content
it was given (``best.pt`` is the ``last.pt`` of its epoch, without writing it twice).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write to (by name); it becomes ``path`` when the block ends normally."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide the file from the user's group
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: Path, mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """``open(path, mode)`` whose result appears at ``path`` only when the block ends normally."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def atomic_link(source: Path, path: Path) -> None:
    """``path`` becomes another name of ``source`` (a hard link), or a copy of it on a file system
    without hard links; atomically either way."""
    with atomic_path(path) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK, errno.EACCES):
                raise
            shutil.copyfile(source, tmp)
