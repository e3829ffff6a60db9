"""One process's part in a run, around ``Trainer.fit``: what is set up first and torn down last.

Under torchrun the process joins the group, all ranks agree on rank 0's run directory (or the
checkpoint's, when resuming from a path), rank 0 locks it against a second launch, and only
rank 0 logs at INFO level (and has the logger backends, built by train.py). Torch's CPU threads
are chosen with the loader workers. At the end the lock is released and the process group left,
whatever happened.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as tdist

from common.dist import Dist, local_jobs, task_cpus
from common.signals import Interrupted, StopSignals
from trainer.checkpoint import resume_run_dir
from trainer.distributed import broadcast, cpu_threads, init_distributed, shutdown_distributed
from trainer.shell.rundir import remove_stale_temporaries
from trainer.shell.runlock import RunDirectoryBusy, RunLock

log = logging.getLogger("train")


@dataclass(frozen=True)
class Session:
    """Where this process stands: its rank and the run directory all ranks write to."""

    dist: Dist
    run_dir: Path


def lock_run_dir(run_dir: Path, dist: Dist) -> RunLock | None:
    """Rank 0 locks ``run_dir`` for the whole job; every rank is refused alike if it is busy."""
    lock, busy = None, None
    if dist.is_main:
        try:
            lock = RunLock(run_dir).acquire()
        except RunDirectoryBusy as err:
            busy = str(err)
    busy = broadcast(busy, dist)
    if busy:
        raise RunDirectoryBusy(busy)
    return lock


@contextmanager
def session(run_dir: Path, resume: str | None, stop: StopSignals | None = None) -> Iterator[Session]:
    """Join the run (DDP under torchrun), settle and lock its directory; undo it all on the way out."""
    dist = init_distributed()
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # one log: rank 0's
    elif dist.enabled:
        log.info("DDP: %d processes (%s), one log: rank 0's", dist.world_size, tdist.get_backend())
    lock = None
    try:
        # all ranks write where rank 0's Hydra put the run, or where the resumed checkpoint lives
        run_dir = resume_run_dir(resume, broadcast(run_dir, dist))
        lock = lock_run_dir(run_dir, dist)
        if lock is not None:
            remove_stale_temporaries(run_dir)  # a killed save's; no process of ours writes there now
        if stop is not None:
            stop.announce = dist.is_main
        yield Session(dist, run_dir)
    except Interrupted as err:
        err.run_dir = run_dir
        raise
    finally:
        if lock is not None:
            lock.release()
        shutdown_distributed(dist)


def set_threads(num_threads: int | None, num_workers: int) -> None:
    """torch's CPU threads, chosen with the loader workers (``trainer.distributed.cpu_threads``)."""
    torch.set_num_threads(cpu_threads(num_threads, num_workers))
    jobs = local_jobs()
    log.info(
        "CPU: %d torch thread(s), %d loader worker(s), %s%s",
        torch.get_num_threads(),
        num_workers,
        f"{os.cpu_count()} cores" if task_cpus() is None else f"{task_cpus()} CPUs given by SLURM",
        f", shared by the {jobs} jobs this sweep runs at once" if jobs > 1 and num_threads is None else "",
    )
