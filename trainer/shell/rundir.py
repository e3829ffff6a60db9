"""A run directory that holds an earlier run is never trained into by mistake.

``hydra.run.dir`` fixed to a finished run and ``resume`` forgotten would replace its best.pt
and last.pt, cut its metrics.csv and mix a second TensorBoard file into its curves. A directory
whose ``checkpoints/`` or ``metrics.csv`` show an earlier run is therefore refused unless the
launch says what it wants: ``resume=auto`` (or a checkpoint path) continues it, ``overwrite=true``
moves the earlier run aside, whole, to ``RUN.replaced-<time>``, and starts afresh.

For a single run the check runs as a Hydra callback (``RunDirectoryGuard.on_run_start``) before
Hydra writes anything into the directory, so even the earlier ``.hydra/`` and ``train.log`` are
kept. A sweep's job directories are known only once each job starts, after Hydra has written its
``.hydra/``; there ``train.py`` makes the same check before any training (the checkpoint carries
the config, so nothing of value is lost).

Temporary files of an atomic write that a kill left behind (``.last.pt.XXXX.tmp``) are removed
when the next process takes the run directory's lock.
"""

from __future__ import annotations

import datetime
import logging
import shutil
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from common.errors import UserError, stop_before_logging
from common.files import write_problem
from common.run_folder import HYDRA_OWN, RunFolder
from trainer.shell.runlock import LOCK_FILE, in_use

log = logging.getLogger("train")

KEPT_BY_HYDRA = HYDRA_OWN | {LOCK_FILE}  # left in place when a sweep job's earlier run is moved aside


def aside_name(run_dir: Path) -> Path:
    """A free sibling name for an earlier run moved aside: ``RUN.replaced-2026-12-02T10-00-00``."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
    target = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = run_dir.with_name(f"{run_dir.name}.replaced-{stamp}-{n}")
    return target


def move_aside(run_dir: Path, keep: set[str] = frozenset()) -> Path:
    """Move the earlier run in ``run_dir`` to a sibling folder (everything but ``keep``); its path."""
    target = aside_name(run_dir)
    if not keep:
        run_dir.rename(target)
        return target
    target.mkdir()
    for entry in run_dir.iterdir():
        if entry.name not in keep:
            shutil.move(str(entry), str(target / entry.name))
    return target


def check_writable(run_dir: Path) -> None:
    """UserError unless this process may write in ``run_dir`` (or create it) and its checkpoints."""
    checkpoints = RunFolder(run_dir).checkpoints
    problem = write_problem(run_dir) or (write_problem(checkpoints) if checkpoints.is_dir() else None)
    if problem:
        raise UserError(
            f"The run directory {run_dir} cannot be written: {problem}. Give a folder this user may "
            f"write to (hydra.run.dir=...); to continue a run kept on read-only storage, copy its "
            f"folder somewhere writable and resume there."
        )


def check_run_dir(run_dir: Path, resume: str | None, overwrite: bool, keep: set[str] = frozenset()) -> None:
    """Refuse to start a new run over an earlier one in ``run_dir`` unless ``resume`` continues it
    or ``overwrite`` moves it aside (which is done here). ``keep``: what this launch already wrote."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(
            f"hydra.run.dir={str(run_dir)!r} is a file, not a folder. Give a folder for the run's outputs "
            f"(it is created if it does not exist)."
        )
    check_writable(run_dir)
    earlier = RunFolder(run_dir).earlier_run()
    found = earlier.relative_to(run_dir) if earlier is not None else None
    if found is None or resume is not None:
        return
    if in_use(run_dir):
        return  # the run lock names the live process that holds it
    if not overwrite:
        raise UserError(
            f"The run directory {run_dir} already holds a run ({found}), and this launch would replace "
            f"its checkpoints, metrics.csv and TensorBoard curves. To continue that run, add resume=auto; "
            f"to start afresh there, add overwrite=true (the earlier run is moved aside to "
            f"{run_dir.name}.replaced-<time>, not deleted); or give another hydra.run.dir."
        )
    target = move_aside(run_dir, keep)
    log.warning("overwrite=true: the earlier run in %s was moved to %s", run_dir, target)


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files of atomic writes that a killed process left in ``run_dir``'s
    checkpoints folder (``.NAME.XXXX.tmp``); call with the run lock held. Returns what was removed."""
    folder = RunFolder(run_dir).checkpoints
    stale = sorted(folder.glob(".*.tmp")) if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("Removed %d temporary file(s) a killed save left in %s", len(stale), folder)
    return stale


class RunDirectoryGuard(Callback):
    """Hydra callback: a single run's directory is checked before Hydra writes into it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(str(config.hydra.run.dir)).absolute()
        resume = config.get("resume")
        if config.hydra.get("output_subdir") is None:  # a torchrun rank > 0 writes nowhere
            return
        try:
            check_run_dir(run_dir, resume, bool(config.get("overwrite", False)))
        except UserError as err:
            stop_before_logging(str(err))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if sweep_dir.exists() and not sweep_dir.is_dir():
            stop_before_logging(
                f"hydra.sweep.dir={str(sweep_dir)!r} is a file, not a folder. Give a folder for the "
                f"sweep's jobs (it is created if it does not exist)."
            )
        problem = write_problem(sweep_dir)
        if problem:
            stop_before_logging(
                f"The sweep folder {sweep_dir} cannot be written: {problem}. Give a folder this user may "
                f"write to (hydra.sweep.dir=...)."
            )
