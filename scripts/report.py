"""Write the HTML report of a finished run or of a sweep folder.

    python scripts/report.py run=RUN_OR_SWEEP_DIR

Writes ``report.html`` into the folder: for a run, which run, how good and which classes fail,
then the settings typed, the curves, the best epoch's per-class table and confusion matrix, the
test split's if it has one, the training class sizes and the error gallery; for a sweep, its
jobs with the best marked, each linked to its own report (written too), then their per-class
recalls side by side and their curves in one chart; for any other folder (``outputs/``), every
run found below it (a sweep's jobs too) compared on one page: one row each with the settings
that tell it apart, the best value with its standard error, seeds grouped as mean ± sd, the
per-class recalls side by side and the curves overlaid. One file, pictures embedded: it opens
offline in any browser. train.py writes a run's report at its end.
"""

from __future__ import annotations

import common.startup_signals  # noqa: F401  # isort: skip  (first: a Ctrl-C while libraries load)
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from common.errors import UserError
from common.files import write_problem
from common.run_folder import RunFolder

from lib.app import parse_settings, run_app


@dataclass
class ReportSettings:
    run: str = MISSING  # a run's folder (holding metrics.csv), a sweep's, or any folder of runs


def report(args: ReportSettings | Mapping[str, Any]) -> Path:
    """Write the report as the command line would; its path."""
    cfg = parse_settings(ReportSettings, args, "report")
    from reporting.comparison import runs_under
    from reporting.write import write_report

    folder = Path(cfg.run)
    if not folder.is_dir():
        raise UserError(f"run={cfg.run!r} is not a folder: give a run's folder (RUN) or a sweep's.")
    runs = [] if RunFolder(folder).metrics_csv.exists() else runs_under(folder)
    if not RunFolder(folder).metrics_csv.exists() and not runs:
        raise UserError(
            f"run={cfg.run!r} holds no metrics.csv and no run folders with one below it: not a run's, a "
            f"sweep's or a folder of runs."
        )
    for where in (folder, *runs):
        problem = write_problem(where)
        if problem:
            raise UserError(
                f"report.html cannot be written into {where}: {problem}. Copy the folder somewhere "
                f"writable and give run= that copy."
            )
    for run in runs:  # a sweep or a folder of runs: each run's own report first, so the page links them
        try:
            write_report(run)
        except Exception as err:  # one damaged run costs its own page only
            print(f"report: {run}: no report ({type(err).__name__}: {err})", file=sys.stderr)
    path = write_report(folder)
    print(f"report: {path}")
    return path


if __name__ == "__main__":
    run_app(report, ReportSettings, "report", __doc__)
