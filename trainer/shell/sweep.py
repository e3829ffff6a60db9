"""Sweeps: what the jobs of a ``-m`` launch vary, and how a trial reports to its sweeper.

A sweep's keys come from the command line (``loss=ce,focal``), which each job process may not
see (the submitit launcher runs jobs under its own command line: ``prepare_argv`` passes them on
in the environment), and from the sweeper's own search space (``hydra.sweeper.params``, as in
``hparams_search=longtail``). Jobs are named by those keys; the HParams view flags them.

A sweeper that records failures (Optuna) gets a diverged trial as a failed job, never as a value;
Hydra's basic sweeper stops at a failed job, so there a divergence ends the sweep with its message.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from common.dist import PARALLEL_JOBS_ENV
from common.errors import UserError

log = logging.getLogger("train")

SWEEP_ARGS_ENV = "TRAIN_SWEEP_ARGS"  # a -m command line's overrides, for job processes
UNSAFE = re.compile(r"[^A-Za-z0-9.+@%-]+")  # in a sweep job's folder name, each run of them becomes _
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
DIRECTIONS = {"max": "maximize", "min": "minimize"}
# the search.* keys of hparams_search and the loss key each one sets (apply_search)
SEARCH_TARGETS = {"search.max_m": "max_m", "search.drw_fraction": "drw_epoch"}


class TrialFailed(Exception):
    """A trial that cannot give a value (its loss diverged); the sweeper records it as failed."""


def override_keys(args: Iterable[str]) -> tuple[set[str], set[str]]:
    """The keys that ``key=value`` overrides sweep (``loss=ce,focal``, ``optimizer.lr=range(...)``),
    and those they set to one value."""
    args = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception:  # Hydra itself reports a malformed override
        return set(), set()
    swept = {o.key_or_group for o in parsed if o.is_sweep_override()}
    return swept, {o.key_or_group for o in parsed} - swept


def announce_sweep(argv: list[str]) -> bool:
    """Put a ``-m`` command line's overrides in the environment, which job processes inherit;
    whether it is a sweep."""
    if {"-m", "--multirun"} & set(argv):
        os.environ[SWEEP_ARGS_ENV] = json.dumps(argv[1:])
        os.environ[PARALLEL_JOBS_ENV] = str(jobs_at_once(argv[1:]))
        return True
    return False


def jobs_at_once(args: list[str]) -> int:
    """How many jobs a local launcher starts together: every combination of the command line's
    sweeps (``loss=ce,ldam optimizer.lr=1e-3,1e-4``: 4), or an Optuna search's ``n_jobs`` (1 unless
    ``hydra.sweeper.n_jobs=`` says otherwise)."""
    args = [a for a in args if "=" in a and not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except Exception:  # Hydra itself reports a malformed override
        return 1
    given = {o.key_or_group: o for o in parsed}
    if "hparams_search" in given or "hydra.sweeper.n_jobs" in given:
        n_jobs = given.get("hydra.sweeper.n_jobs")
        return int(n_jobs.value()) if n_jobs is not None and not n_jobs.is_sweep_override() else 1
    count = 1
    for override in parsed:
        if override.is_sweep_override():
            count *= max(1, len(list(override.sweep_string_iterator())))
    return count


def varied_keys(sweeper_params: Mapping[str, Any] | None = None) -> set[str]:
    """The keys this sweep varies: the command line's sweeps and the sweeper's search space,
    less what the command line fixes."""
    args = json.loads(os.environ[SWEEP_ARGS_ENV]) if SWEEP_ARGS_ENV in os.environ else sys.argv[1:]
    swept, fixed = override_keys(args)
    searched, _ = override_keys(f"{k}={v}" for k, v in (sweeper_params or {}).items())
    return swept | (searched - fixed)


def sweeper_params() -> Mapping[str, Any] | None:
    """``hydra.sweeper.params`` of the running job, if any."""
    if not HydraConfig.initialized():
        return None
    params = HydraConfig.get().sweeper.get("params")
    return OmegaConf.to_container(params) if params else None


NAME_LIMIT = 80  # characters of a sweep job's folder name


def sweep_subdir(
    num: int, task_overrides: list[str], params: Mapping[str, Any] | None = None, root: Any = None
) -> str:
    """A sweep job's folder, named by what differs between the jobs and applies to this one:
    ``3_loss-ldam_lr-0.0004432_max_m-0.3142``. The swept keys when they are known (otherwise every
    override except paths), each by its last part (the whole key where two would read the same);
    a ``search.*`` key only where the job's loss uses it; at most ``NAME_LIMIT`` characters. Only
    characters that a path in an override (``checkpoint=DIR/...``) and a shell take unquoted: no
    ``=``, ``,``, brackets. ``root``: the job's config (to tell what applies)."""
    swept = varied_keys(params)
    named = []
    for override in task_overrides:
        key, _, value = override.lstrip("+~").partition("=")
        chosen = (key in swept) if swept else not ("/" in value or key in ("resume", "dataset.root"))
        if chosen and applies(key, root):
            named.append((key, UNSAFE.sub("_", short(value)).strip("_")))
    last = [key.rsplit(".", 1)[-1] for key, _ in named]
    parts = [f"{k if last.count(k) == 1 else key}-{v}" for k, (key, v) in zip(last, named, strict=True)]
    return "_".join([str(num), *parts])[:NAME_LIMIT]


def applies(key: str, root: Any) -> bool:
    """Whether ``key`` changes anything for a job with config ``root`` (None: not known, yes):
    ``search.max_m`` only with a loss that has a margin, and so on (``SEARCH_TARGETS``)."""
    target = SEARCH_TARGETS.get(key)
    if target is None or root is None:
        return True
    loss = OmegaConf.select(root, "loss", default=None)
    return loss is None or target in loss


def short(value: str) -> str:
    """A sampled float as 4 significant digits (``0.000443``); the job's overrides keep it whole."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if len(value) > 8 and math.isfinite(number) else value


def optuna_storage(sweep_dir: str) -> str:
    """``sqlite:///SWEEP_DIR/optuna.db``, its folder made: a sweep resumes from the same folder."""
    folder = Path(sweep_dir).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its set-up chatter on opening the file
    return f"sqlite:///{folder / 'optuna.db'}"


def records_failures() -> bool:
    """Whether this job runs under a sweeper that records failed jobs (Optuna), not Hydra's basic one."""
    if not HydraConfig.initialized():
        return False
    hydra = HydraConfig.get()
    return hydra.mode == RunMode.MULTIRUN and hydra.sweeper.get("_target_") != BASIC_SWEEPER


def check_direction(monitor: str, monitor_mode: str, direction: Any = None) -> None:
    """A sweeper that optimises train.py's value (the best ``trainer.monitor``) must optimise it in
    ``trainer.monitor_mode``'s direction, or it would keep the worst trial. ``direction``: the
    sweeper's (read from the running job's Hydra config when not given)."""
    if direction is None:
        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
            return
        direction = HydraConfig.get().sweeper.get("direction")
        if direction is None:
            return
    wanted = DIRECTIONS[monitor_mode]
    if str(getattr(direction, "name", direction)) != wanted:
        raise UserError(
            f"hydra.sweeper.direction={direction} but train.py returns the best {monitor} "
            f"(trainer.monitor_mode={monitor_mode}): set hydra.sweeper.direction={wanted}."
        )


def apply_search(cfg: DictConfig) -> None:
    """Map the ``search`` node of ``hparams_search`` configs onto the settings it stands for.

    ``search.max_m`` is LDAM's margin (``loss.max_m``), ignored by the other losses;
    ``search.drw_fraction`` starts deferred re-weighting after that fraction of the epochs
    (``loss.drw_epoch``; 1.0 or more: never). A sweeper can sample both whatever the loss.
    """
    search = cfg.get("search")
    if not search:
        return
    applied = []
    with open_dict(cfg):
        if search.get("max_m") is not None and SEARCH_TARGETS["search.max_m"] in cfg.loss:
            cfg.loss.max_m = float(search.max_m)
            applied.append(f"loss.max_m={cfg.loss.max_m:g}")
        fraction = search.get("drw_fraction")
        if fraction is not None and SEARCH_TARGETS["search.drw_fraction"] in cfg.loss:
            epoch = math.floor(float(fraction) * cfg.trainer.epochs) + 1
            cfg.loss.drw_epoch = epoch if epoch <= cfg.trainer.epochs else None
            applied.append(f"loss.drw_epoch={cfg.loss.drw_epoch}")
    log.info("search: %s", " ".join(applied) or "nothing applies to this loss")


def sweep_context() -> tuple[list[str], Path | None]:
    """For a job of a sweep: the keys the sweep varies and the sweep's folder; ([], None) otherwise."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return [], None
    return sorted(varied_keys(sweeper_params())), Path(HydraConfig.get().sweep.dir).absolute()
