"""Jobs that Hydra's submitit launcher runs (``hydra/launcher=submitit_slurm|submitit_local``).

One job with several tasks is one DDP run: each task's rank, local rank, world size and the
master's address come from submitit's ``JobEnvironment`` and are set as torchrun would set them,
so the same code path (``trainer.distributed``) serves both.

Preemption and time limits: submitit sends its signal (USR2) a little before SLURM stops a job.
The signal is handled like SIGTERM (finish the step, write ``last.pt``); then the run directory
is marked (``checkpoints/requeued``) and submitit's own handler requeues the job through the
launcher's checkpoint hook (``hydra.launcher.max_num_timeout`` times at most). A job that starts
in a marked directory continues with ``resume=auto``, so it ends where an uninterrupted job would.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.run_folder import RunFolder
from common.signals import forward_stops

log = logging.getLogger("train")


def in_job() -> bool:
    """Whether this process is a task of a submitit job."""
    return bool(os.environ.get("SUBMITIT_EXECUTOR"))


def adopt_job_environment() -> None:
    """In a submitit job of several tasks (and no torchrun), describe this task as torchrun would:
    RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT."""
    if not in_job() or "WORLD_SIZE" in os.environ:
        return
    import submitit

    env = submitit.JobEnvironment()
    if env.num_tasks <= 1:
        return
    local = os.environ["SUBMITIT_EXECUTOR"] == "local"
    os.environ.update(
        RANK=str(env.global_rank),
        LOCAL_RANK=str(env.local_rank),
        WORLD_SIZE=str(env.num_tasks),
        LOCAL_WORLD_SIZE=str(env.num_tasks // env.num_nodes),
        MASTER_ADDR="127.0.0.1" if local or env.num_nodes == 1 else env.hostnames[0],  # one node: no DNS
        MASTER_PORT=str(20000 + zlib.crc32(env.job_id.encode()) % 20000),  # one per job, same on requeue
    )


def preemption_signal() -> int | None:
    """The signal submitit sends before a preemption or time-out, in a submitit job."""
    if not in_job():
        return None
    from submitit.core.job_environment import JobEnvironment

    return int(JobEnvironment._usr_sig())


def resume_setting(resume: str | None, run_dir: Path) -> str | None:
    """``auto`` for a requeued job (its run directory is marked), else ``resume`` unchanged."""
    if resume is None and in_job() and RunFolder(run_dir).requeue_mark.is_file():
        log.info("This job was requeued after a preemption or time-out: continuing with resume=auto.")
        return "auto"
    return resume


def finished(run_dir: Path) -> None:
    """The run ended normally: a later job in this directory is not a requeue."""
    RunFolder(run_dir).requeue_mark.unlink(missing_ok=True)


def requeue_after(signum: int, run_dir: Path, handler: Callable[..., Any] | None) -> None:
    """After a stop on a signal in a submitit job (rank 0): mark the run for resuming, then let
    submitit's ``handler`` for that signal requeue the job (it exits the process)."""
    if not in_job() or int(os.environ.get("RANK", "0")) > 0:
        return
    folder = RunFolder(run_dir)
    if folder.last.is_file():
        folder.requeue_mark.write_text(f"stopped by {signal.Signals(signum).name}\n")
    if signum == preemption_signal() and callable(handler):
        # SLURM stops the requeued job's processes with SIGTERM while this one exits: nothing is
        # left to save, and a handler raising in the interpreter's exit would only fail the step
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        handler(signum, None)


def child_processes() -> list[int]:
    """The live processes this one started (read from /proc; empty where there is none)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            children.append(int(stat.parent.name))
    return children


def forward_stop(signum: int, frame: Any) -> None:
    """A sweep's launcher stopped (SIGTERM, Ctrl-C, a closed terminal): the jobs it started as
    processes of their own (``hydra/launcher=submitit_local``) get SIGTERM, so each saves
    ``last.pt`` and stops instead of training on as an orphan; the launcher waits for them, then exits."""
    jobs = child_processes()  # submitit's job controllers, which pass SIGTERM on to their tasks
    name = signal.Signals(signum).name
    say = f"Sweep stopped by {name}: SIGTERM to {len(jobs)} running job(s), which save last.pt and stop.\n"
    os.write(2, say.encode())
    for pid in jobs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in jobs:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    os._exit(128 + signum)


def forward_stops_to_jobs() -> None:
    """In a sweep's launcher process: stop signals are passed on to its job processes (``forward_stop``).
    Jobs that run in this process (Hydra's basic launcher) install their own handlers meanwhile."""
    forward_stops(forward_stop)
