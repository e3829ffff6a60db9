"""What every stop signal does, at every stage of every program: the one owner of signal policy.

- **Starting** (``install_starting``, from ``common.startup_signals``, imported first by every
  entry point): SIGINT, SIGTERM or SIGHUP while the libraries load ends the program at once with
  one line and 128 + the signal's number. Ctrl-C raises KeyboardInterrupt wherever Python happens
  to be; inside ``import torch`` or numpy that leaves half-initialised modules whose later errors
  hide the Ctrl-C. Nothing has been done yet, so nothing is lost.
- **Training** (``StopSignals``, below): finish the step, write a resumable checkpoint, exit.
- **Loader workers** (``ignore_in_worker``): SIGTERM and Ctrl-C are the main process's to handle
  (it checkpoints and shuts its workers down); a worker that died of them would fail the step
  being finished.
- **A sweep's launcher** (``forward_stops``): the jobs it started as processes of their own get
  SIGTERM, save and stop, instead of training on as orphans (``trainer.shell.cluster``).
- **Scripts** (``unwind_on_ctrl_c``): from the moment a script works, Ctrl-C unwinds, so that a
  file being written atomically is removed, never left half-written.

During training:

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
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from common.run_folder import LAST_SHOWN

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)  # stop training, resumably
STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # stop a program that cannot save anything


def stop_while_starting(signum: int, frame: object) -> None:
    os.write(2, f"Stopped by {signal.Signals(signum).name} while starting; nothing was done.\n".encode())
    os._exit(128 + signum)


def install_starting() -> None:
    """While the program loads its libraries: a stop signal ends it at once, in one line. The
    program replaces these handlers as soon as it can act on a signal itself."""
    for signum in STOPS:
        signal.signal(signum, stop_while_starting)


def ignore_in_worker(worker_id: int) -> None:
    """A loader worker's ``worker_init_fn``: the main process handles SIGTERM and Ctrl-C."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)


def forward_stops(forward: Callable[[int, Any], Any]) -> None:
    """In a sweep's launcher: ``forward`` passes each stop signal on to the jobs it started."""
    for signum in STOPS:
        signal.signal(signum, forward)


def unwind_on_ctrl_c() -> None:
    """In a script at work: Ctrl-C raises KeyboardInterrupt, so that open writes clean up."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


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
