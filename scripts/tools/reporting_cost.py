"""What reporting an epoch costs as the class count grows: ``benchmark.py measure=reporting``.

    python scripts/benchmark.py measure=reporting [classes=1000] [epochs=20]

Times what a run does for each epoch besides training and validating, on made-up results for
two models (val, val_ema): the scalars, the console line, TensorBoard and metrics.csv (the
default loggers), for 10 classes and for ``classes`` classes, alternating, in one process; prints
the medians and their ratio (the goal: within 1.1).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from common.errors import UserError
from trainer.evaluation.metrics import Evaluation
from trainer.hooks.base import EpochEnd
from trainer.loggers.base import Loggers, RunInfo
from trainer.loggers.csv_files import CSVLogger
from trainer.loggers.tensorboard import TensorBoardLogger
from trainer.results import TrainStats
from trainer.run_log import RunLogger, epoch_scalars

from tools.settings import ReportingSettings


def made_up(classes: int, rng: np.random.Generator) -> Evaluation:
    """Results of 20 validation images per class: 12 right, 8 spread over classes at random."""
    matrix = np.eye(classes, dtype=np.int64) * 12
    for true in range(classes):
        np.add.at(matrix[true], rng.integers(0, classes, size=8) if classes > 1 else [0], 1)
    recall = (matrix.diagonal() / matrix.sum(1)).tolist()
    return Evaluation(0.5, 0.6, 0.55, 0.5, 0.05, recall, matrix.tolist(), 0.6, 0.7, 0.5, 0.3, counts=matrix)


def epoch_cost(classes: int, folder: Path, epochs: int) -> list[float]:
    """Seconds of reporting per epoch for ``classes`` classes."""
    names = [f"class {i}" for i in range(classes)]
    run = RunInfo(folder, names, ["val", "val_ema"], {})
    reporter = RunLogger(run, Loggers([TensorBoardLogger(), CSVLogger()]), epochs, "val/acc")
    reporter.open(resume_after=0)
    rng = np.random.default_rng(0)
    results = {"val": made_up(classes, rng), "val_ema": made_up(classes, rng)}
    train = TrainStats(loss=1.0, lr=1e-3, images_per_s=100.0, time=1.0, skipped=0)
    costs = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        scalars = epoch_scalars(train, results, names)
        end = EpochEnd(epoch, train, results, main=True)
        reporter.record(end, scalars)
        reporter.epoch_line(end, None)
        reporter.wait()  # the record is written on a worker thread: its whole cost counted here
        costs.append(time.perf_counter() - start)
    reporter.close(None)
    return costs


def main(args: ReportingSettings) -> None:
    if args.classes < 1 or args.epochs < 1:
        raise UserError(f"classes={args.classes} and epochs={args.epochs} must be at least 1.")
    many, epochs = args.classes, args.epochs
    few, lots = [], []
    with tempfile.TemporaryDirectory() as tmp:
        epoch_cost(10, Path(tmp) / "warm-up", 2)  # imports, first writes
        for turn in range(3):  # alternating, so that drift on the machine hits both alike
            few += epoch_cost(10, Path(tmp) / f"few{turn}", epochs)
            lots += epoch_cost(many, Path(tmp) / f"many{turn}", epochs)
    few_cost, many_cost = statistics.median(few), statistics.median(lots)
    what = "scalars, console, TensorBoard, metrics.csv"
    print(f"\nReporting one epoch ({what}), medians of 3 x {epochs} alternating epochs:")
    print("| classes | ms per epoch |\n| --- | --- |")
    print(f"| 10 | {1000 * few_cost:.1f} |")
    print(f"| {many} | {1000 * many_cost:.1f} |")
    print(f"| ratio | {many_cost / few_cost:.2f} |")
