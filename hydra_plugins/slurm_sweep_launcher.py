"""Hydra's submitit SLURM launcher (``hydra/launcher=slurm``), with a job that ends without a
result said in one paragraph.

Hydra's launcher waits for each job's result in turn; a job that ends without one (``scancel``,
killed for memory or time, a node lost) or whose task raised stops the wait with submitit's
exception, and Hydra prints its traceback. Here that is one paragraph naming the job, its state
as SLURM reports it, its run folder and how to continue, and exit status 1. The sweep's other
jobs are not waited for: they go on in SLURM.

submitit learns that a job ended without a result from ``sacct``. On a cluster without job
accounting it never does, and the launch would wait for such a job forever: that is said once,
before the jobs are submitted.
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

from common.errors import stop_before_logging
from common.run_folder import RunFolder

JOB = re.compile(r"Job (\d+)(?:_(\d+))? \(task: \d+\)")
STATE = re.compile(r"\(state: ([^)]*)\)")

log = logging.getLogger(__name__)


def job_folder(sweep_dir: Path, number: int) -> Path | None:
    """The run folder of the sweep's job ``number`` (``hydra.job.num``), if it was made."""
    return next((p for p in sorted(sweep_dir.glob(f"{number}_*")) if p.is_dir()), None)


def ended_without_result(error: Exception, sweep_dir: Path, first_job: int) -> str:
    """What a user needs to know about submitit's ``error`` for one job of the sweep."""
    text = str(error)
    found, state = JOB.search(text), STATE.search(text)
    slurm_id = found.group(0).split(" ")[1] if found else "?"
    number = first_job + int(found.group(2) or 0) if found else None
    folder = job_folder(sweep_dir, number) if number is not None else None
    if folder is None:
        where = "It made no run folder."
    elif RunFolder(folder).last.is_file():
        where = (
            f"Its run folder {folder} holds checkpoints/last.pt: the same command with resume=auto "
            f"continues every unfinished job of the sweep from its last checkpoint (finished jobs end "
            f"at once)."
        )
    else:
        where = f"Its run folder {folder} holds no checkpoint yet (see its train.log)."
    if state:
        what = f"ended without a result: SLURM reports {state.group(1)}"
    else:
        what = "failed: " + " ".join(text.split())[-800:]
    return (
        f"Job {slurm_id} of this sweep {what}. {where} The sweep's other jobs are not waited for: those "
        f"queued or running go on in SLURM (squeue), each in its own folder; once they end, "
        f"python scripts/report.py run={sweep_dir} writes the sweep's page."
    )


def accounting_problem() -> str | None:
    """Why ``sacct`` cannot tell this launch how its jobs ended, or None when it can."""
    try:
        answer = subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        return f"sacct cannot be run ({err})"
    if answer.returncode == 0:
        return None
    said = (answer.stderr or answer.stdout).strip().splitlines()
    return f"sacct answers: {said[-1] if said else f'exit status {answer.returncode}'}"


class SlurmSweepLauncher(SlurmLauncher):
    """Hydra's submitit_slurm launcher; a job without a result ends the launch in one paragraph."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        from submitit.core.utils import FailedJobError, UncompletedJobError

        problem = accounting_problem()
        if problem:
            log.warning(
                "This cluster has no job accounting (%s). submitit reads it to learn that a job ended "
                "without a result (scancel, killed for memory or time): such a job would leave this "
                "launch waiting; stop it with Ctrl-C then (the jobs go on in SLURM, each in its own "
                "folder). Jobs that finish are seen as usual.",
                problem,
            )
            logging.getLogger("submitit").setLevel(logging.ERROR)  # its "Bypassing sacct error" at every poll
        try:
            return super().launch(job_overrides, initial_job_idx)
        except (UncompletedJobError, FailedJobError) as err:
            assert self.config is not None
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            stop_before_logging(ended_without_result(err, sweep_dir, initial_job_idx), status=1)
