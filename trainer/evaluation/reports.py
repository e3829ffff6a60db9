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

from data.names import shortened
from trainer import results as named
from trainer.atomic import atomic_open
from trainer.evaluation.figures import confusion_image
from trainer.evaluation.metrics import Evaluation
from trainer.progress import FitSummary
from trainer.results import DETAIL_CLASSES

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


LABELS = {
    "acc": "accuracy",
    "balanced_acc": "balanced acc",
    "macro_f1": "macro-F1",
    "loss": "loss",
    "ece": "ECE",
}


def metrics_table(results: Evaluation, class_names: Sequence[str]) -> str:
    """A plain-text table: overall and balanced accuracy, macro-F1, loss, calibration error, the
    many/medium/few-shot accuracies (where the training counts are known; a group without
    classes is "absent"), then precision, recall (the class's accuracy), F1 and support per class."""
    width = 14
    shots = {"many-shot": results.acc_many, "medium-shot": results.acc_medium, "few-shot": results.acc_few}
    known = any(v is not None for v in shots.values())
    order = list(LABELS)  # the usual order; a metric added to trainer.results.VALIDATION comes last
    names = sorted(named.VALIDATION, key=lambda n: order.index(n) if n in order else len(order))
    adjusted = results.balanced_acc_adjusted
    posthoc = f"balanced acc of argmax(z - tau log prior), tau {results.posthoc_tau or 0:g}"
    lines = [
        *(f"{LABELS.get(name, name):<{width}} {getattr(results, name):.4f}" for name in names),
        *([f"{'post-hoc bal.':<{width}} {adjusted:.4f}   ({posthoc})"] if adjusted is not None else []),
        *(
            f"{label:<{width}} " + ("absent" if value is None else f"{value:.4f}")
            for label, value in shots.items()
            if known
        ),
        "",
        class_report(results.confusion_matrix, class_names).rstrip(),
    ]
    return "\n".join(lines)


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
    """One evaluation as JSON-ready data: where its images came from, every number, per class."""
    return {
        "data": data,
        "images": int(results.matrix().sum()),
        **results.scalars(),
        "posthoc_tau": results.posthoc_tau,
        "per_class": dict(zip(class_names, results.acc_per_class, strict=True)),
        "confusion_matrix": results.matrix().tolist(),
    }


def monitored(summary: FitSummary) -> str:
    """The results the monitor chose from: ``val`` or ``val_ema``."""
    return summary.monitor.split("/")[0] if summary.monitor.startswith("val") else "val"


def write_metrics(summary: FitSummary, run_dir: Path, sources: dict[str, str]) -> None:
    """``RUN/metrics.json``: the best epoch's validation results and best.pt's test results."""
    prefix = monitored(summary)
    report: dict[str, Any] = {
        "monitor": summary.monitor,
        "best_metric": summary.best_metric,
        "best_epoch": summary.best_epoch,
        "weights": "ema" if prefix == "val_ema" else "model",
        "class_names": summary.class_names,
        "class_counts": summary.class_counts,
    }
    names = summary.class_names
    if summary.best is not None:
        report["valid"] = evaluation_record(summary.best[prefix], names, sources.get("valid", ""))
    if summary.test is not None:
        report["test"] = evaluation_record(summary.test, names, sources.get("test", ""))
    with atomic_open(run_dir / "metrics.json", "w", encoding="utf-8") as f:
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
    prefix = monitored(summary)
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
