"""``report.html`` for any folder a run leaves: a run's page, a sweep's page (its job table, then
the comparison of its jobs), or the comparison page of a folder of runs (``reporting.comparison``)."""

from __future__ import annotations

import logging
from pathlib import Path

from common.atomic import atomic_open
from common.run_folder import RunFolder, SweepFolder
from reporting.comparison import comparison_page, read_run, runs_under, sections
from reporting.page import RunReport, sweep_page

log = logging.getLogger("train")


def write_report(folder: Path) -> Path:
    """``folder/report.html`` for a run, a sweep or a folder of runs, written whole; its path."""
    if SweepFolder(folder).is_sweep():
        jobs = [read_run(p, folder) for p in runs_under(folder, depth=1)]
        text = sweep_page(folder, sections(jobs, with_overview=False))
    elif RunFolder(folder).metrics_csv.exists():
        text = RunReport(folder).page()
    else:
        text = comparison_page(folder)
    path = RunFolder(folder).report
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def report_or_warn(folder: Path) -> Path | None:
    """``write_report``, for the end of a run or sweep: a report that cannot be made (a full disk,
    a file a user edited) is said in one warning and never fails what already finished."""
    try:
        path = write_report(folder)
    except Exception as err:  # the run's results are written; its report is a convenience
        log.warning("The report could not be written into %s (%s: %s).", folder, type(err).__name__, err)
        return None
    log.info("Report: %s", path)
    return path
