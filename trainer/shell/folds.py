"""The end of a k-fold sweep (``-m dataset.folds=K dataset.fold=0,...,K-1``): each fold's numbers
at its best epoch (by ``trainer.monitor``), then the mean and the standard deviation over the
folds of the metric table's fold numbers (balanced accuracy, macro-F1, G-mean, few-shot
accuracy) and each class's recall; printed and written as ``SWEEP_DIR/fold_summary.csv`` and
``.json``. Read from each fold's ``metrics.csv`` and ``per_class.csv`` (the raw model's, ``val``).
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from common.run_folder import SweepFolder
from reporting.recorded import best_recalls
from trainer.results import METRICS, MODELS, column, tag

if TYPE_CHECKING:  # the sweep table calls this module with its jobs
    from trainer.shell.sweep_table import Job

HEADLINE = tuple(column(tag(MODELS[0], m.name)) for m in METRICS if m.folds)  # val_balanced_acc, ...


def fold_numbers(job: Job) -> dict[str, float] | None:
    """A fold's headline numbers and per-class recalls at its best epoch; None without an epoch."""
    row = job.best_row
    if row is None:
        return None
    numbers = {key: float(row[key]) for key in HEADLINE if row.get(key) not in (None, "")}
    try:
        recalls = best_recalls(job.folder, MODELS[0], job.best_epoch) if job.best_epoch is not None else {}
    except OSError:
        recalls = {}
    numbers |= {f"recall {name}": recall for name, recall in recalls.items()}
    return numbers


def summary(jobs: list[Job]) -> dict[str, dict[str, float]]:
    """For each number: the mean and standard deviation over the folds that have it, and their count."""
    folds = [n for n in map(fold_numbers, jobs) if n is not None]
    names = list(dict.fromkeys(name for n in folds for name in n))
    out = {}
    for name in names:
        values = [n[name] for n in folds if name in n]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        out[name] = {"mean": statistics.fmean(values), "sd": sd, "folds": len(values)}
    return out


def write_and_say(sweep_dir: Path, jobs: list[Job]) -> str:
    """Write fold_summary.csv and .json into the sweep folder; the table to print."""
    numbers = summary(jobs)
    sweep = SweepFolder(sweep_dir)
    sweep.fold_summary_json.write_text(json.dumps(numbers, indent=2), encoding="utf-8")
    with open(sweep.fold_summary_csv, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "mean", "sd", "folds"])
        for name, n in numbers.items():
            writer.writerow([name, f"{n['mean']:.6g}", f"{n['sd']:.6g}", n["folds"]])
    lines = ["| over the folds, at each fold's best epoch | mean ± sd | folds |", "| --- | --- | --- |"]
    lines += [f"| {name} | {n['mean']:.4f} ± {n['sd']:.4f} | {n['folds']} |" for name, n in numbers.items()]
    return "\n".join(lines)
