"""Files a setting names, checked before anything is built."""

from __future__ import annotations

from pathlib import Path

from common.errors import UserError


def check_file(path: str | Path, key: str, what: str) -> None:
    """UserError naming ``key`` unless ``path`` is a file; ``what`` says what would be accepted."""
    if not Path(path).is_file():
        raise UserError(f"{key}={str(path)!r} is not a file. Give {what}.")
