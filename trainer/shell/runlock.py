"""One training process per run directory.

Two launches into one directory (the same ``hydra.run.dir ... resume=auto`` started twice, or
two runs started in the same second under the dated default) would both train and interleave
``metrics.csv``, the log, TensorBoard and the checkpoints. The first takes an exclusive
``flock`` on ``RUN/.lock``; the second is refused at once, naming the holder written in the
file. The operating system drops the lock when its holder exits or is killed, so a stale lock
cannot block the next launch; the file itself stays (removing lock files races).
"""

from __future__ import annotations

import datetime
import fcntl
import os
import socket
from pathlib import Path

from common.errors import UserError

LOCK_FILE = ".lock"


class RunDirectoryBusy(UserError):
    """Another live process trains in this run directory."""


def holder(lock: Path) -> str:
    try:
        return lock.read_text(errors="replace").strip() or "another process"
    except OSError:
        return "another process"


class RunLock:
    """The exclusive lock of ``run_dir``, held from ``acquire`` to ``release``."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self.fd: int | None = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def acquire(self) -> RunLock:
        """Take the lock and write who holds it; RunDirectoryBusy if a live process has it."""
        if not self.try_acquire():
            raise RunDirectoryBusy(
                f"The run directory {self.path.parent} is in use by {holder(self.path)} (lock file "
                f"{self.path}). Two runs in one directory would mix their metrics, logs and "
                f"checkpoints. Wait for that run to end or stop it, or give another hydra.run.dir."
            )
        assert self.fd is not None
        started = datetime.datetime.now().isoformat(timespec="seconds")
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"process {os.getpid()} on {socket.gethostname()}, since {started}\n".encode(), 0)
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def in_use(run_dir: Path) -> bool:
    """Whether a live process holds ``run_dir``'s lock (this one included while it holds it)."""
    if not (run_dir / LOCK_FILE).is_file():
        return False
    probe = RunLock(run_dir)
    if probe.try_acquire():
        probe.release()
        return False
    return True
