"""``key=value`` arguments of the measuring scripts (benchmark.py), strings by design: they are
passed on to the code measured. The user-facing scripts are Hydra apps (app.py)."""

from __future__ import annotations

from app import fail


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
