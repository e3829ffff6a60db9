"""The exceptions that end a run with a message instead of a stack trace.

``UserError`` is a user's mistake (bad config value, missing file, bad data): exit status 2.
``DiskFullError`` is a write that found no space: exit status 1. ``train.py`` and the scripts
print the message; anything else that goes wrong is a bug and keeps its traceback.
"""

import errno
import sys
from typing import NoReturn

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space, over quota, over the file-size limit


class UserError(Exception):
    """A mistake the user can fix; the message names the key, file or value and what is accepted."""


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite; the run stops before it saves anything more."""


class DiskFullError(Exception):
    """A file could not be written for lack of space; the message says what is intact."""


def disk_full_cause(err: BaseException) -> OSError | None:
    """The OSError in ``err``'s chain that says the disk is full, if any (torch.save wraps it)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_FULL:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def stop_before_logging(message: str, status: int = 2) -> NoReturn:
    """End a launch with ``message`` where train.py's log is not set up yet (a Hydra callback, the
    sweeper): on stderr in the log's own form, then ``status``."""
    print(f"[train][ERROR] - {message}", file=sys.stderr)
    sys.exit(status)
