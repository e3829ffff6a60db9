"""Pictures and tables of a classifier's errors: the confusion matrix, a per-class table.

The confusion matrix is one compact picture, legible at TensorBoard's default size: coloured by
the row-normalised share (each row sums to 100%, its diagonal is that class's recall), each
non-empty cell with its share in %, each row label with its number of images, for TensorBoard
(``val/confusion_matrix``) and ``scripts/evaluate.py`` (``confusion_matrix.png``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainer.metrics import Evaluation
from trainer.state import FitSummary

if TYPE_CHECKING:  # matplotlib and scikit-learn load when first used (the first figure, the end)
    from matplotlib.figure import Figure

log = logging.getLogger("train")


def confusion_figure(matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str = "") -> Figure:
    """One compact matrix (rows: true class, columns: predicted), coloured by the row-normalised
    share with a colour scale; each non-empty cell shows its share of the row in %, an empty
    cell nothing; each row's label carries its number of images. About 350 pixels wide up to a
    dozen classes: TensorBoard shows it at that size without shrinking it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=np.int64)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    n = len(class_names)
    labels = [name.replace("$", r"\$") for name in class_names]  # "$...$" would be parsed as maths
    grow = max(1.0, n / 12)
    # no pyplot: a figure of its own (Agg, never a window), safe to draw on a worker thread
    fig = Figure(figsize=(4.4 * grow, 3.8 * grow), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, format=lambda x, _: f"{x:.0%}")
    colorbar.ax.tick_params(labelsize=7)
    ax.set_title(f"{title} (% of each true class)".strip(), fontsize=8)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(
        range(n), [f"{label} ({int(r)})" for label, r in zip(labels, rows[:, 0], strict=True)], fontsize=7
    )
    for i, j in zip(*np.nonzero(counts), strict=True):
        color = "white" if share[i, j] > 0.5 else "black"
        ax.text(j, i, f"{100 * share[i, j]:.0f}", ha="center", va="center", fontsize=7, color=color)
    fig.tight_layout(pad=0.8)
    return fig


def save_confusion_png(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str, title: str = ""
) -> None:
    confusion_figure(matrix, class_names, title).savefig(path, dpi=120)


def class_report(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> str:
    """scikit-learn's per-class precision, recall, F1 and support, from a confusion matrix."""
    from sklearn.metrics import classification_report

    counts = np.asarray(matrix, dtype=np.int64)
    true, pred = np.nonzero(counts)
    n = counts[true, pred]  # the matrix back as one (true, predicted) pair per image
    return classification_report(
        np.repeat(true, n),
        np.repeat(pred, n),
        labels=list(range(len(class_names))),
        target_names=list(class_names),
        digits=4,
        zero_division=0,
    )


def metrics_table(results: Evaluation, class_names: Sequence[str]) -> str:
    """A plain-text table: overall and balanced accuracy, macro-F1, loss, calibration error, the
    many/medium/few-shot accuracies (where the training counts are known; a group without
    classes is "absent"), then precision, recall (the class's accuracy), F1 and support per class."""
    width = 14
    shots = {"many-shot": results.acc_many, "medium-shot": results.acc_medium, "few-shot": results.acc_few}
    known = any(v is not None for v in shots.values())
    lines = [
        f"{'accuracy':<{width}} {results.acc:.4f}",
        f"{'balanced acc':<{width}} {results.balanced_acc:.4f}",
        f"{'macro-F1':<{width}} {results.macro_f1:.4f}",
        f"{'loss':<{width}} {results.loss:.4f}",
        f"{'ECE':<{width}} {results.ece:.4f}",
        *(
            f"{label:<{width}} " + ("absent" if value is None else f"{value:.4f}")
            for label, value in shots.items()
            if known
        ),
        "",
        class_report(results.confusion_matrix, class_names).rstrip(),
    ]
    return "\n".join(lines)


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
    prefix = summary.monitor.split("/")[0] if summary.monitor.startswith("val") else "val"
    if summary.best is not None:
        table = metrics_table(summary.best[prefix], summary.class_names)
        log.info("Validation (%s) at the best epoch, %d:\n%s", prefix, summary.best_epoch, table)
