"""The end of a sweep: one table of its jobs (folder, the swept values, the best monitored value),
the best marked, printed and written to ``SWEEP_DIR/sweep_results.csv``.

A Hydra callback (``on_multirun_end``), so it serves every launcher (the basic one, submitit,
SLURM) and sweeper (Optuna's too, whose best trial is the marked row: it optimises the same value
train.py returns). Each job is read from what it left in its folder: ``.hydra/overrides.yaml``,
``.hydra/config.yaml`` (the monitor and its direction) and ``metrics.csv``. A job with no epoch
there is listed as ``no epoch`` (it failed or was stopped before one); a swept value the job's
loss does not use (``search.max_m`` of a cross-entropy trial) as ``-``.

Noise is shown, not hidden behind a winner: a balanced accuracy comes with its standard error,
the binomial estimate from the best epoch's per-class recalls and validation counts
(``sqrt(sum_c r_c (1 - r_c) / n_c) / C`` over the validated classes, from ``per_class.csv`` and
``classes.csv``), and a job whose value lies within two standard errors of the best's (of their
difference) is marked ``within noise``. The folds of a k-fold sweep are one experiment, not a
contest: no fold is marked best; their mean ± sd follows the table.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from common.files import read_yaml
from common.run_folder import RunFolder, SweepFolder
from reporting.recorded import balanced_se, best_of, monitor_of, within_two_se
from trainer.shell.sweep import applies, short, varied_keys

log = logging.getLogger("train")


@dataclass(frozen=True)
class Job:
    """One job of a sweep as its folder records it."""

    folder: Path
    values: dict[str, str]  # swept key -> the job's value
    monitor: str
    mode: str
    best: float | None  # None: no epoch was recorded
    best_epoch: int | None
    best_row: dict[str, str] | None = None  # metrics.csv's row of the best epoch
    se: float | None = None  # the standard error of a balanced accuracy at the best epoch
    loggers_off: dict[str, str] = field(default_factory=dict)  # backend -> when and why it went off


def within_noise(job: Job, best: Job | None) -> bool:
    """Whether ``job``'s value lies within two standard errors (of the difference) of the best's."""
    if best is None or job is best or job.best is None or best.best is None:
        return False
    return within_two_se(job.best, job.se, best.best, best.se)


def read_job(folder: Path, swept: set[str]) -> Job | None:
    """The job in ``folder``, or None if it is not a job's folder."""
    run = RunFolder(folder)
    config = read_yaml(run.config_yaml)
    overrides = read_yaml(run.overrides_yaml)
    if not isinstance(config, dict) or not isinstance(overrides, list):
        return None
    given = dict(str(o).lstrip("+~").partition("=")[::2] for o in overrides)
    values = {key: given.get(key, "") for key in sorted(swept)} if swept else given
    root = OmegaConf.create(config)
    values = {key: value if applies(key, root) else "-" for key, value in values.items()}
    monitor, mode = monitor_of(config)
    try:
        with open(run.metrics_csv, newline="", encoding="utf-8") as f:
            found = best_of(csv.DictReader(f), monitor, mode)
    except OSError:
        found = None
    best, best_row = (found[0], dict(found[1])) if found else (None, None)
    best_epoch = int(best_row["epoch"]) if best_row is not None else None
    se = balanced_se(folder, monitor, best_epoch)
    ended = read_yaml(run.metrics_json)  # JSON is YAML
    off = ended.get("loggers_off") if isinstance(ended, dict) else None
    return Job(
        folder, values, monitor, mode, best, best_epoch, best_row, se, off if isinstance(off, dict) else {}
    )


def best_job(jobs: list[Job]) -> Job | None:
    scored = [j for j in jobs if j.best is not None]
    if not scored:
        return None
    return (max if scored[0].mode == "max" else min)(scored, key=lambda j: j.best)


def job_number(job: Job) -> tuple[int, str]:
    head = job.folder.name.split("_", 1)[0]
    return (int(head), job.folder.name) if head.isdigit() else (1 << 30, job.folder.name)


def table(jobs: list[Job], best: Job | None) -> str:
    """The jobs as a Markdown table, the best marked."""
    keys = list(jobs[0].values) if jobs else []
    monitor = jobs[0].monitor if jobs else "best"
    with_se = any(job.se is not None for job in jobs)  # a balanced accuracy: its standard error
    head = ["job", *keys, f"best {monitor}", *(["SE"] if with_se else []), "epoch", ""]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for job in jobs:
        score = "no epoch" if job.best is None else f"{job.best:.4f}"
        mark = "<- best" if job is best else "within noise" if within_noise(job, best) else ""
        values = [short(job.values.get(k, "")) for k in keys]  # the CSV keeps them whole
        se = ["" if job.se is None else f"{job.se:.4f}"] if with_se else []
        cells = [job.folder.name, *values, score, *se, str(job.best_epoch or ""), mark]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(path: Path, jobs: list[Job], best: Job | None) -> None:
    keys = list(jobs[0].values) if jobs else []
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["folder", *keys, "monitor", "best", "se", "best_epoch", "is_best", "within_noise"])
        for job in jobs:
            best_value = "" if job.best is None else f"{job.best:.6g}"
            se = "" if job.se is None else f"{job.se:.6g}"
            row = [str(job.folder), *(job.values.get(k, "") for k in keys), job.monitor, best_value, se]
            writer.writerow([*row, job.best_epoch or "", int(job is best), int(within_noise(job, best))])


def summarise(sweep_dir: Path, swept: set[str]) -> tuple[list[Job], Job | None]:
    """Every job folder of the sweep, in job order, and the best one."""
    folders = [p for p in sweep_dir.iterdir() if p.is_dir()] if sweep_dir.is_dir() else []
    jobs = sorted((j for p in folders if (j := read_job(p, swept)) is not None), key=job_number)
    return jobs, best_job(jobs)


class SweepTable(Callback):
    """Hydra callback: says where a sweep's jobs log, and ends the sweep with the jobs' table."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        log.info("Sweep in %s: each job logs to its own train.log; a table follows at the end", sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        params = config.hydra.sweeper.get("params")
        swept = varied_keys(OmegaConf.to_container(params) if params else None)
        jobs, best = summarise(sweep_dir, swept)
        if not jobs:
            return
        folds = "dataset.fold" in swept
        if folds:  # one experiment: no fold is the best
            best = None
        results = SweepFolder(sweep_dir).results_csv
        try:
            write_csv(results, jobs, best)
            written = f"; also in {results}"
        except OSError as err:
            written = f" ({results.name} could not be written: {err.strerror})"
        log.info("The sweep's %d job(s)%s:\n%s", len(jobs), written, table(jobs, best))
        for job in jobs:  # a backend's record of a job is incomplete: said beside the table
            for name, when in job.loggers_off.items():
                log.warning(
                    "%s: logger %s went off at %s; its record of that job is incomplete.",
                    job.folder.name,
                    name,
                    when,
                )
        if best is not None:
            close = [job.folder.name for job in jobs if within_noise(job, best)]
            log.info(
                "Best: %s, %s %.4f at epoch %s%s",
                best.folder,
                best.monitor,
                best.best,
                best.best_epoch,
                f"; within noise of it (two standard errors): {', '.join(close)}" if close else "",
            )
        if folds:  # a k-fold sweep: what the folds say together
            from trainer.shell.folds import write_and_say

            try:
                log.info(
                    "Over the folds (also fold_summary.csv and .json):\n%s", write_and_say(sweep_dir, jobs)
                )
            except OSError as err:
                log.warning("The fold summary could not be written into %s: %s", sweep_dir, err.strerror)
        from reporting.write import report_or_warn

        report_or_warn(sweep_dir)
