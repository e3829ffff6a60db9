"""SIGTERM, SIGINT, SIGHUP and SIGUSR1 during training: finish the step, write a resumable
checkpoint, exit.

Clusters send SIGTERM before they stop a job (and SIGUSR1 where a job asked for an early warning,
as ``sbatch --signal=USR1@120`` does); a user presses Ctrl-C (SIGINT); a closed terminal or SSH
session sends SIGHUP. All four are handled alike. While the
Trainer runs (``StopSignals.deferred``) the first signal only sets a flag: the loop finishes
the step it is in, writes ``last.pt`` with the mid-epoch state that resumes exactly, and raises
``Interrupted``. Outside training (data scan, model building) nothing can be saved, so the
signal stops the process at once: ``on_stop_now``, when given, says so and ends the process
without unwinding (an exception raised inside ``import torch`` would leave half-loaded modules
whose errors hide the signal). A second signal always stops at once; checkpoints are
written atomically, so the previous one stays intact. The exit status is 128 + the signal's
number, as a shell reports a process killed by it.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from common.run_folder import LAST_SHOWN

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)


class Interrupted(BaseException):
    """Training stopped on a signal; ``saved`` says what the checkpoint on disk holds.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int, saved: str) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}: {saved}")
        self.signum, self.saved = signum, saved
        self.run_dir: Path | None = None  # set by train(): where the checkpoints are

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class StopSignals:
    """Handlers for ``SIGNALS``; ``requested`` is the signal waiting to be acted on. Outside
    training, ``on_stop_now(signum)`` (if given) ends the process instead of raising Interrupted."""

    def __init__(self, on_stop_now: Callable[[int], Any] | None = None) -> None:
        self.on_stop_now = on_stop_now
        self.requested: int | None = None
        self.deferring = False
        self.announce = True  # under DDP only rank 0 says what it does
        self.previous: dict[int, Callable[..., Any] | int | None] = {}  # the handlers taken over

    def install(self, extra: Sequence[int] = ()) -> StopSignals:
        """Take over ``SIGNALS`` and the ``extra`` signals (a cluster's preemption notice);
        only the main thread may, elsewhere this is a no-op."""
        if threading.current_thread() is threading.main_thread():
            for signum in (*SIGNALS, *extra):
                self.previous[signum] = signal.signal(signum, self.handle)
        return self

    def handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if not self.deferring and self.requested is None and self.on_stop_now is not None:
            self.on_stop_now(signum)
        if not self.deferring or self.requested is not None:
            raise Interrupted(signum, "stopped at once; checkpoints written earlier are intact")
        self.requested = signum
        if not self.announce:
            return
        log.warning(
            "%s received: finishing the current step, then saving %s "
            "(a second signal stops at once, keeping the previous checkpoint).",
            name,
            LAST_SHOWN,
        )

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Within this block a first signal waits for the loop to reach a safe point."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
