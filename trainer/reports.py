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

if TYPE_CHECKING:  # matplotlib loads with the first figure
    from matplotlib.figure import Figure

log = logging.getLogger("train")


class ConfusionPlot:
    """One compact matrix (rows: true class, columns: predicted), coloured by the row-normalised
    share with a colour scale; each non-empty cell shows its share of the row in %, an empty
    cell nothing; each row's label carries its number of images. About 350 pixels wide up to a
    dozen classes: TensorBoard shows it at that size without shrinking it.

    Built once and redrawn with each new matrix (``show``): laying out a new figure costs as
    much as drawing it, and a run draws one per validated model each epoch."""

    def __init__(self, class_names: Sequence[str]) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        n = len(class_names)
        self.labels = [name.replace("$", r"\$") for name in class_names]  # "$...$" would be parsed as maths
        grow = max(1.0, n / 12)
        # no pyplot: a figure of its own (Agg, never a window), safe to draw on a worker thread
        self.figure = fig = Figure(figsize=(4.4 * grow, 3.8 * grow), dpi=80)
        FigureCanvasAgg(fig)
        self.ax = ax = fig.subplots()
        self.image = ax.imshow(np.zeros((n, n)), cmap="Blues", vmin=0.0, vmax=1.0)
        colorbar = fig.colorbar(self.image, ax=ax, fraction=0.046, pad=0.03, format=lambda x, _: f"{x:.0%}")
        colorbar.ax.tick_params(labelsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_xticks(range(n), self.labels, rotation=45, ha="right", fontsize=7)
        self.cells = [
            [ax.text(j, i, "", ha="center", va="center", fontsize=7) for j in range(n)] for i in range(n)
        ]
        self.row_labels: list[str] = []

    def show(self, matrix: Sequence[Sequence[int]], title: str = "") -> Figure:
        """The figure, showing ``matrix``; laid out again only when the row labels change."""
        counts = np.asarray(matrix, dtype=np.int64)
        rows = counts.sum(axis=1, keepdims=True)
        share = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
        self.image.set_data(share)
        self.ax.set_title(f"{title} (% of each true class)".strip(), fontsize=8)
        for (i, j), text in np.ndenumerate(np.array(self.cells, dtype=object)):
            text.set_text(f"{100 * share[i, j]:.0f}" if counts[i, j] else "")
            text.set_color("white" if share[i, j] > 0.5 else "black")
        row_labels = [f"{label} ({int(r)})" for label, r in zip(self.labels, rows[:, 0], strict=True)]
        if row_labels != self.row_labels:
            self.ax.set_yticks(range(len(row_labels)), row_labels, fontsize=7)
            self.figure.tight_layout(pad=0.8)
            self.row_labels = row_labels
        return self.figure

    def pixels(self, matrix: Sequence[Sequence[int]], title: str = "") -> np.ndarray:
        """The figure showing ``matrix``, rendered: (H, W, 3) uint8."""
        figure = self.show(matrix, title)
        figure.canvas.draw()
        return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def confusion_figure(matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str = "") -> Figure:
    """A ``ConfusionPlot`` of its own showing ``matrix``."""
    return ConfusionPlot(class_names).show(matrix, title)


def save_confusion_png(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str, title: str = ""
) -> None:
    confusion_figure(matrix, class_names, title).savefig(path, dpi=120)


def class_report(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> str:
    """Precision, recall, F1 and support of each class, then accuracy and the macro and
    support-weighted averages, from a confusion matrix (rows: true class), laid out as
    scikit-learn's ``classification_report`` with 4 digits (a ratio over no images is 0; the
    averages are over every class), without loading scikit-learn for it."""
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
    lines += [row(name, scores[:, c], int(support[c])) for c, name in enumerate(class_names)]
    weighted = (scores * support).sum(axis=1) / total if total else np.zeros(3)
    lines += [
        "",
        f"{'accuracy':>{width}} " + " " * 20 + f" {tp.sum() / max(total, 1):>9.4f} {total:>9}",
        row("macro avg", scores.mean(axis=1), total),
        row("weighted avg", weighted, total),
    ]
    return "\n".join(lines)


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
