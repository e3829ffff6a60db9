"""A process's place in a run: rank among ``world_size`` processes, GPU ``local_rank``.

torchrun describes it in environment variables; ``trainer.distributed`` joins the process
group. This module only reads them, so it costs no import of torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: rank among ``world_size`` processes, GPU ``local_rank``."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()  # one process, no process group


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


PARALLEL_JOBS_ENV = "TRAIN_PARALLEL_JOBS"  # a sweep's jobs that a local launcher starts together


def local_jobs() -> int:
    """Jobs of a sweep that run side by side on this machine: the number a ``submitit_local``
    launch starts at once (``PARALLEL_JOBS_ENV``, set by the sweep's command), else 1."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "local":
        return 1
    try:
        return max(1, int(os.environ.get(PARALLEL_JOBS_ENV, "1")))
    except ValueError:
        return 1


def task_cpus() -> int | None:
    """The CPUs SLURM gave this task (``--cpus-per-task``, ``hydra.launcher.cpus_per_task``) in a
    SLURM job or step; None elsewhere. Clusters without CPU confinement still show every core of
    the node to ``os.cpu_count()``; threads sized to it would crowd the other jobs there."""
    value = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return int(value) if value.isdigit() and int(value) > 0 else None
