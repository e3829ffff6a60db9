"""Tables of a classifier's errors and the run's closing lines: the headline metrics, the
per-class report (from the confusion matrix), the run's metrics.json (the best epoch's
validation and the held-out test results), and ``scripts/evaluate.py``'s confusion picture
(drawn by ``trainer.evaluation.figures``)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.atomic import atomic_open
from common.run_folder import RunFolder
from data.names import shortened
from trainer import results as named
from trainer.evaluation.figures import confusion_image
from trainer.evaluation.metrics import Evaluation
from trainer.results import DETAIL_CLASSES, FitSummary, monitored_model, weights_key

log = logging.getLogger("train")


def save_confusion_png(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str, title: str = ""
) -> None:
    """The confusion matrix's picture (``trainer.evaluation.figures``) at twice TensorBoard's size."""
    confusion_image(matrix, class_names, title, scale=2).save(path)


def top_confusions(matrix: Sequence[Sequence[int]], class_names: Sequence[str], k: int = 20) -> str:
    """The ``k`` largest off-diagonal cells as a Markdown table (true class, predicted class,
    images, share of the true class): the confusion matrix of many classes, readable."""
    counts = np.asarray(matrix, dtype=np.int64)
    off = counts.copy()
    np.fill_diagonal(off, 0)
    trues, predicteds = np.nonzero(off)  # the confusions there are: few, for many classes
    values = off[trues, predicteds]
    rows = counts.sum(axis=1)
    lines = ["| true | predicted | images | share of true |", "| --- | --- | --- | --- |"]
    for i in np.argsort(-values, kind="stable")[:k]:
        true, predicted, images = int(trues[i]), int(predicteds[i]), int(values[i])
        names = (shortened(class_names[true]), shortened(class_names[predicted]))
        lines.append(f"| {names[0]} | {names[1]} | {images} | {100 * images / max(rows[true], 1):.0f}% |")
    return "\n".join(lines)


def class_report(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> str:
    """Precision, recall, F1 and support of each class, then accuracy and the macro and
    support-weighted averages, from a confusion matrix (rows: true class), laid out as
    scikit-learn's ``classification_report`` with 4 digits (a ratio over no images is 0; the
    averages are over every class), without loading scikit-learn for it."""
    class_names = [shortened(name) for name in class_names]  # the full names are in the files
    counts = np.asarray(matrix, dtype=np.float64)
    tp, support, predicted = counts.diagonal(), counts.sum(axis=1), counts.sum(axis=0)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    scores = np.stack(
        [ratio(tp, predicted), ratio(tp, support), ratio(2 * tp, predicted + support)]
    )  # (3, C)
    total = int(support.sum())
    width = max(len("weighted avg"), *(len(name) for name in class_names))

    def row(name: str, values: Sequence[float], images: int) -> str:
        return f"{name:>{width}} " + "".join(f" {v:>9.4f}" for v in values) + f" {images:>9}"

    lines = [
        f"{'':>{width}} " + "".join(f" {h:>9}" for h in ("precision", "recall", "f1-score", "support")),
        "",
    ]
    shown: list[int | None] = list(range(len(class_names)))
    if len(class_names) > DETAIL_CLASSES:  # the worst and best by recall; every class in per_class.csv
        by_recall = np.argsort(scores[1], kind="stable").tolist()
        shown = [*by_recall[:10], None, *by_recall[-10:]]  # None: the classes left out, as "..."
        lines[0] += f"   (the 10 lowest and 10 highest recalls of {len(class_names)} classes)"
    lines += [
        f"{'...':>{width}}" if c is None else row(class_names[c], scores[:, c], int(support[c]))
        for c in shown
    ]
    weighted = (scores * support).sum(axis=1) / total if total else np.zeros(3)
    lines += [
        "",
        f"{'accuracy':>{width}} " + " " * 20 + f" {tp.sum() / max(total, 1):>9.4f} {total:>9}",
        row("macro avg", scores.mean(axis=1), total),
        row("weighted avg", weighted, total),
    ]
    return "\n".join(lines)


def metrics_table(results: Evaluation, class_names: Sequence[str]) -> str:
    """A plain-text table: every number of the metric table (``trainer.results.METRICS``) in its
    order, by its label (a metric not computed, such as a shot group without classes, is "absent";
    the post-hoc one names its tau), then precision, recall (the class's accuracy), F1 and support
    per class."""
    width = max(len(named.metric(name).label) for name in named.validation_names())
    shots = {f"acc_{group}" for group in named.SHOT_GROUPS}
    counted = any(getattr(results, name) is not None for name in shots)  # the training counts known
    lines = []
    for name in named.validation_names():
        metric, value = named.metric(name), getattr(results, name, None)
        if metric.optional and value is None and (name not in shots or not counted):
            continue  # not asked for (no tau) or not knowable (no training counts)
        note = f"   (argmax(z - tau log prior), tau {results.posthoc_tau:g})" if name == named.POSTHOC else ""
        lines.append(f"{metric.label:<{width}} {named.shown(value)}{note}")
    missing = [shortened(n) for n, r in zip(class_names, results.acc_per_class, strict=True) if r is None]
    if missing:
        lines.append(
            f"not validated (no validation images; left out of the recall means): {', '.join(missing)}"
        )
    return "\n".join([*lines, "", class_report(results.confusion_matrix, class_names).rstrip()])


def tidy(value: Any) -> Any:
    """Floats to 6 significant digits, so float32 values read as measured (0.772, not
    0.7720000147819519); nested lists and dicts alike."""
    if isinstance(value, float):  # JSON has no NaN or infinity: such a value is written null
        return float(f"{value:.6g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: tidy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [tidy(v) for v in value]
    return value


def evaluation_record(results: Evaluation, class_names: Sequence[str], data: str) -> dict[str, Any]:
    """One evaluation as JSON-ready data: where its images came from, every number of the metric
    table (null where not computed), per class."""
    return {
        "data": data,
        "images": int(results.matrix().sum()),
        **{name: getattr(results, name, None) for name in named.validation_names()},
        "posthoc_tau": results.posthoc_tau,
        "per_class": dict(zip(class_names, results.acc_per_class, strict=True)),
        "confusion_matrix": results.matrix().tolist(),
    }


def write_metrics(summary: FitSummary, run_dir: Path, sources: dict[str, str]) -> None:
    """``RUN/metrics.json``: the best epoch's validation results and best.pt's test results."""
    prefix = monitored_model(summary.monitor)
    report: dict[str, Any] = {
        "monitor": summary.monitor,
        "best_metric": summary.best_metric,
        "best_epoch": summary.best_epoch,
        "weights": weights_key(prefix),
        "class_names": summary.class_names,
        "class_counts": summary.class_counts,
    }
    names = summary.class_names
    if summary.best is not None:
        report["valid"] = evaluation_record(summary.best[prefix], names, sources.get("valid", ""))
    if summary.test is not None:
        report["test"] = evaluation_record(summary.test, names, sources.get("test", ""))
    if summary.loggers_off:  # what the run's record in those backends lacks: the sweep table says it
        report["loggers_off"] = summary.loggers_off
    with atomic_open(RunFolder(run_dir).metrics_json, "w", encoding="utf-8") as f:
        f.write(json.dumps(tidy(report), indent=2, ensure_ascii=False))


def log_summary(summary: FitSummary, run_dir: Path) -> None:
    """The run's last lines: the best epoch, then its validation table (of the monitored model)."""
    if summary.best_metric is None:
        log.info("No epoch was trained; outputs in %s", run_dir)
        return
    log.info(
        "Best %s = %.4f at epoch %d; outputs in %s",
        summary.monitor,
        summary.best_metric,
        summary.best_epoch,
        run_dir,
    )
    prefix = monitored_model(summary.monitor)
    if summary.best is not None:
        table = metrics_table(summary.best[prefix], summary.class_names)
        log.info("Validation (%s) at the best epoch, %d:\n%s", prefix, summary.best_epoch, table)
    if summary.test is not None:
        weights = "EMA" if prefix == "val_ema" else "model"
        log.info(
            "Test (held out, evaluated once, after training) with best.pt, epoch %d, %s weights:\n%s",
            summary.best_epoch,
            weights,
            metrics_table(summary.test, summary.class_names),
        )
