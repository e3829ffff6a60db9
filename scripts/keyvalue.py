"""``key=value`` command-line arguments for the scripts, Hydra style but without a run directory."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from common.errors import UserError


def fail(message: str) -> NoReturn:
    """A user's mistake: one line on stderr and exit status 2, as train.py does."""
    print(message, file=sys.stderr)
    sys.exit(2)


def parse_key_values(
    argv: list[str], defaults: dict[str, str | None], script: str, nested: tuple[str, ...] = ()
) -> dict[str, str]:
    """Merge ``key=value`` items over ``defaults``; keys under a ``nested`` prefix (``dataset.root``)
    are kept as given. Exits with a message on an unknown or missing key."""
    args = dict(defaults)
    for item in argv:
        key, sep, value = item.partition("=")
        known = key in defaults or any(key.startswith(f"{prefix}.") for prefix in nested)
        if not sep or not known:
            accepted = ", ".join([*defaults, *(f"{p}.*" for p in nested)])
            fail(f"{script}: {item!r} is not key=value with a key among: {accepted}")
        args[key] = value
    missing = [k for k, v in args.items() if v is None]
    if missing:
        fail(f"{script}: give {' '.join(f'{k}=...' for k in missing)}")
    return args  # type: ignore[return-value]


def as_bool(value: str, key: str) -> bool:
    """A true/false setting, or a UserError naming the key and the value given."""
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise UserError(f"{key}={value!r} must be true or false.")


def as_positive_int(value: str, key: str) -> int:
    """A positive integer setting, or a UserError naming the key and the value given."""
    if not value.strip().isdigit() or int(value) < 1:
        raise UserError(f"{key}={value!r} must be a positive integer.")
    return int(value)


def output_folder(folder: Path, key: str, value: str) -> Path:
    """Create ``folder`` for an output now, before any work; a UserError naming ``key`` if it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"{key}={value!r}: the folder {str(folder)!r} cannot be created ({err.strerror})."
        ) from None
    if not os.access(folder, os.W_OK):
        raise UserError(f"{key}={value!r}: the folder {str(folder)!r} is not writable.")
    return folder


def run_script(
    main: Callable[[dict[str, str]], object],
    defaults: dict[str, str | None],
    script: str,
    nested: tuple[str, ...] = (),
) -> None:
    """Parse ``sys.argv`` and call ``main``; a user's mistake ends in one message, not a traceback."""
    try:
        main(parse_key_values(sys.argv[1:], defaults, script, nested))
    except UserError as err:
        fail(f"{script}: {err}")
