"""File and folder names as text that every output can hold.

On Linux a name is bytes; Python hands names that are not valid UTF-8 over as strings with
lone surrogates, which a UTF-8 log, CSV, JSON file or TensorBoard tag cannot encode, and a
newline in a name would split a log line or a CSV row. ``printable`` writes such bytes as
``\\xNN`` and control characters as their backslash escapes (``\\n``, ``\\t``); every other
name, accents and all scripts included, is returned unchanged. The files themselves are read
by their real names.
"""

from __future__ import annotations


def decodable(text: str) -> str:
    """``text`` with the undecodable bytes of any name in it written as ``\\xNN``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no undecodable byte made
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def printable(name: str) -> str:
    """``name`` with undecodable bytes as ``\\xNN`` and control characters escaped."""
    if name.isprintable():  # False for surrogates and control characters
        return name
    text = decodable(name)
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


DISPLAY_WIDTH = 40  # characters of a class name shown in pictures and tables


def shortened(name: str, width: int = DISPLAY_WIDTH) -> str:
    """``name`` cut to ``width`` characters for a picture or a console table, its middle replaced by
    an ellipsis (the start and the end tell similar names apart); files keep the full name."""
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return f"{name[:head]}…{name[-(width - 1 - head) :]}"
