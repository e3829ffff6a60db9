"""``key=value`` command-line arguments for the scripts that are not Hydra apps."""

from __future__ import annotations

import sys


def parse_key_values(argv: list[str], defaults: dict[str, str | None], script: str) -> dict[str, str]:
    """Merge ``key=value`` items over ``defaults``; exit with a message on an unknown or missing key."""
    args = dict(defaults)
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in defaults:
            sys.exit(f"{script}: {item!r} is not key=value with a key among: {', '.join(defaults)}")
        args[key] = value
    missing = [k for k, v in args.items() if v is None]
    if missing:
        sys.exit(f"{script}: give {' '.join(f'{k}=...' for k in missing)}")
    return args  # type: ignore[return-value]
