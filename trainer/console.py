"""What a person watching sees while an epoch runs (``trainer.progress``).

On a terminal, a tqdm bar redrawn in place. Written to a file (SLURM's ``.out``, ``| tee``,
submitit's logs) a bar would leave a carriage-return frame per refresh, so there the epoch is
reported as plain log lines instead: one at each quarter of an epoch that has already run for
``QUIET_SECONDS``, none for a short one (its epoch line follows soon enough).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm import tqdm

log = logging.getLogger("trainer.trainer")
QUIET_SECONDS = 30.0


def on_terminal() -> bool:
    """Whether the progress bars' stream (stderr) is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


class EpochProgress:
    """The training epoch's progress: a bar on a terminal, a few plain lines in a file, or nothing."""

    def __init__(self, loader: Iterable, desc: str, enabled: bool) -> None:
        self.desc, self.start = desc, time.perf_counter()
        self.bar = tqdm(loader, desc=desc, disable=not (enabled and on_terminal()), leave=False)
        self.plain = enabled and self.bar.disable
        self.quarters_said = 0

    def __iter__(self) -> Iterator[Any]:
        return iter(self.bar)

    def show(self, step: int, steps: int, loss: float, lr: float, seen: int) -> None:
        """The running loss, the lr and the speed (``seen`` images so far) at ``step`` of ``steps``."""
        elapsed = time.perf_counter() - self.start
        if not self.plain:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{seen / elapsed:.0f}")
            return
        quarter = 4 * step // max(steps, 1)
        if elapsed >= QUIET_SECONDS and 0 < quarter < 4 and quarter > self.quarters_said:
            self.quarters_said = quarter
            log.info("%s: step %d of %d, loss %.4f, lr %.2e", self.desc, step, steps, loss, lr)

    def close(self) -> None:
        self.bar.close()
