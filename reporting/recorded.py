"""The numbers a run's folder records, read back: the monitored value's best epoch
(``metrics.csv``), each class's recall at an epoch (``per_class.csv``) and the standard error of a
balanced accuracy from it and the validation counts (``classes.csv``). The sweep table, the fold
summary, the run report and the comparison page read them here.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from common.run_folder import RunFolder
from trainer.results import column


def monitor_of(config: Mapping[str, Any]) -> tuple[str, str]:
    """The run's ``trainer.monitor`` and ``trainer.monitor_mode`` from its config (defaults if absent)."""
    trainer = config.get("trainer") or {}
    return str(trainer.get("monitor", "val/balanced_acc")), str(trainer.get("monitor_mode", "max"))


def best_of(
    rows: Iterable[Mapping[str, str]], monitor: str, mode: str
) -> tuple[float, Mapping[str, str]] | None:
    """The best finite value of ``monitor`` in metrics.csv's rows and its row (the first of equals,
    as best.pt keeps it); None when no row has one."""
    best: tuple[float, Mapping[str, str]] | None = None
    for row in rows:
        try:
            value = float(row.get(column(monitor)) or "nan")
        except ValueError:
            continue
        if not math.isfinite(value):
            continue
        if best is None or (value > best[0] if mode == "max" else value < best[0]):
            best = value, row
    return best


def best_recalls(folder: Path, model: str, epoch: int) -> dict[str, float]:
    """Each class's recall of ``model`` (``val``, ``val_ema``) at ``epoch``, from the run's
    per_class.csv; classes without validation images are left out."""
    with open(RunFolder(folder).per_class_csv, newline="", encoding="utf-8") as f:
        return {
            row["class"]: float(row["recall"])
            for row in csv.DictReader(f)
            if int(row["epoch"]) == epoch and row["model"] == model and row["recall"] != ""
        }


def balanced_se(folder: Path, monitor: str, epoch: int | None) -> float | None:
    """The binomial standard error of ``monitor`` (a balanced accuracy) at ``epoch``, from the
    recalls in per_class.csv and the validation counts in classes.csv; None where either is
    missing or the monitor is no balanced accuracy."""
    if epoch is None or not monitor.endswith("/balanced_acc"):
        return None
    try:
        with open(RunFolder(folder).classes_csv, newline="", encoding="utf-8") as f:
            counts = {row["class"]: int(row["valid"] or 0) for row in csv.DictReader(f)}
        recalls = best_recalls(folder, monitor.split("/", 1)[0], epoch)
    except (OSError, ValueError, KeyError):
        return None
    terms = [r * (1 - r) / counts[c] for c, r in recalls.items() if counts.get(c, 0) > 0]
    return math.sqrt(sum(terms)) / len(terms) if terms else None


def within_two_se(value: float, se: float | None, best: float, best_se: float | None) -> bool:
    """Whether ``value`` lies within two standard errors (of the difference) of ``best``; False
    where a standard error is unknown."""
    if se is None or best_se is None:
        return False
    return abs(best - value) <= 2 * math.hypot(se, best_se)
