"""Optuna studies that continue without repeating themselves (``hparams_search=...``).

Hydra's Optuna sweeper numbers a launch's jobs from 0 and seeds its sampler afresh, so a second
launch into the same sweep folder (which continues the study stored there) would sample the
same points as the first and name their folders alike, replacing the earlier trials' runs.
``ContinuingOptunaSweeper`` numbers a continued study's jobs after the trials it already holds,
and seeds a seeded sampler with ``seed + that number`` (a repeat of the same launch draws the
same points again; Optuna keeps no sampler state in its storage). A study file that cannot be
opened or written is named in one paragraph, before any trial starts.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig

from common.errors import UserError, stop_before_logging
from common.files import sqlite_file, sqlite_problem
from trainer.shell.sweep import check_direction

log = logging.getLogger(__name__)


def earlier_trials(storage: Any, study_name: str | None, completed: bool = False) -> int:
    """How many trials (``completed`` ones only) the stored study holds; 0 when there is no such study."""
    import optuna

    if storage is None or study_name is None:
        return 0
    try:
        trials = optuna.load_study(study_name=study_name, storage=storage).trials
    except KeyError:  # no study of that name in the storage yet
        return 0
    return sum(1 for t in trials if t.state == optuna.trial.TrialState.COMPLETE or not completed)


def plain_optuna_log() -> None:
    """Optuna colours its log lines; written to a file (``| tee``, SLURM's .out) the colour codes
    would be noise, so off a terminal its handler gets the same format without them."""
    if sys.stderr.isatty():
        return
    import optuna

    root = optuna.logging.get_logger("optuna")
    for handler in root.handlers:
        handler.setFormatter(logging.Formatter("[%(levelname)1.1s %(asctime)s] %(message)s"))


class ContinuingOptunaSweeper(OptunaSweeper):
    """Hydra's Optuna sweeper whose continued studies sample new points into new job folders."""

    def setup(self, *, config: DictConfig, **kwargs: Any) -> None:
        super().setup(config=config, **kwargs)
        self.sampler_config = config.hydra.sweeper.get("sampler")
        plain_optuna_log()

    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        path = sqlite_file(impl.storage)
        problem = sqlite_problem(path) if path is not None else None
        if problem:
            stop_before_logging(
                f"The Optuna study file {path} (hydra.sweeper.storage) cannot be used: {problem}. Give a "
                f"sweep folder where it can be created (hydra.sweep.dir=DIR), or move the damaged file away "
                f"(the trials' run folders stay usable without it)."
            )
        try:  # before any trial: a sweep in the wrong direction would keep the worst trial
            trainer, direction = impl.config.trainer, impl.direction
            if isinstance(direction, Sequence) and not isinstance(direction, str):
                direction = direction[0]  # train.py returns one value: one objective
            check_direction(trainer.monitor, trainer.monitor_mode, direction)
        except UserError as err:
            stop_before_logging(str(err))
        done = earlier_trials(impl.storage, impl.study_name)
        if done:
            impl.job_idx = done  # job folders and hydra.job.num continue after the earlier trials
            seed = self.sampler_config.get("seed") if self.sampler_config is not None else None
            if seed is not None and not self.sampler_config.get("_partial_", False):
                impl.sampler = instantiate(self.sampler_config, seed=int(seed) + done)
            log.info(
                "Study %s holds %d trials: continuing with trial %d%s",
                impl.study_name,
                done,
                done,
                f", sampler seed {int(seed) + done} ({seed} + {done})" if seed is not None else "",
            )
        try:
            return super().sweep(arguments)
        except ValueError:  # Optuna's "no best trial", in words that vary by version
            if earlier_trials(impl.storage, impl.study_name, completed=True):
                raise
            stop_before_logging(
                f"No trial of study {impl.study_name} has completed: every trial failed (each one's "
                f"reason is logged above as 'Failed experiment'). Nothing is written to "
                f"optimization_results.yaml.",
                status=1,
            )
