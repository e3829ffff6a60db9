"""Files a setting names, checked before anything is built."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from common.errors import UserError


def check_file(path: str | Path, key: str, what: str) -> None:
    """UserError naming ``key`` unless ``path`` is a file; ``what`` says what would be accepted."""
    if not Path(path).is_file():
        raise UserError(f"{key}={str(path)!r} is not a file. Give {what}.")


def sqlite_file(url: object) -> Path | None:
    """The file of a ``sqlite:///PATH`` store URL (an Optuna study, an MLflow store); None for any other."""
    text = str(url or "")
    return Path(text.removeprefix("sqlite:///")) if text.startswith("sqlite:///") else None


LOCK_PATIENCE = 60.0  # seconds an SQLite store may stay locked by another writer


def sqlite_problem(path: Path) -> str | None:
    """Why the SQLite file ``path`` cannot serve as a store (not a database, not writable, its folder
    missing or not writable), or None: said at once, before a library's minutes of retries."""
    if path.exists():
        try:  # another process writing holds it locked for a while: waited for, not called damage
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=LOCK_PATIENCE) as db:
                db.execute("SELECT name FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.Error as err:
            if "locked" in str(err):
                return f"another process kept it locked for {LOCK_PATIENCE:g} s ({err})"
            return f"it cannot be read as an SQLite database ({err})"
        if not path.is_file() or not os.access(path, os.W_OK):
            return "it is not writable"
    elif not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        return f"its folder {path.parent} does not exist or is not writable"
    return None


def write_problem(folder: Path) -> str | None:
    """Why no file can be made in ``folder`` (or, where it does not exist yet, in the nearest folder
    above it, where it would be created), or None. Said before any work, instead of a traceback
    when the first file is written."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or os.access(existing, os.W_OK | os.X_OK):
        return None  # a file in the way is named by the caller's own check
    try:
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return f"{existing} is {'on a read-only file system' if read_only else 'not writable by this user'}"


def read_yaml(path: Path) -> Any:
    """The YAML file at ``path`` as data; None when it is missing, unreadable or not YAML."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


@contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file ``lock`` (created if missing) for the block: other
    processes wait at the same call. The kernel drops it when the process ends, however it ends."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the flock
