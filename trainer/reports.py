"""Pictures and tables of a classifier's errors: the confusion matrix, a per-class table.

The confusion matrix is drawn twice side by side, as counts and row-normalised (each row
sums to 1, its diagonal is that class's recall), with the class names on both axes, for
TensorBoard (``val/confusion_matrix``) and ``scripts/evaluate.py`` (``confusion_matrix.png``).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files and TensorBoard only; never a window
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from trainer.metrics import Evaluation


def confusion_figure(matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str = "") -> Figure:
    """Counts and row-normalised confusion matrices (rows: true class, columns: predicted)."""
    counts = np.asarray(matrix, dtype=np.int64)
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    n = len(class_names)
    labels = [name.replace("$", r"\$") for name in class_names]  # "$...$" would be parsed as maths
    side = max(4.0, 0.6 * n + 2)
    # 60 dpi: legible in TensorBoard, and rendering stays a small part of an epoch on a CPU
    fig, axes = plt.subplots(1, 2, figsize=(2 * side, side), dpi=60)
    for ax, values, name, fmt in (
        (axes[0], counts, "counts", "d"),
        (axes[1], normalised, "row-normalised", ".2f"),
    ):
        ax.imshow(values, cmap="Blues", vmin=0)
        ax.set_title(f"{title} {name}".strip())
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_xticks(range(n), labels, rotation=45, ha="right")
        ax.set_yticks(range(n), labels)
        high = values.max() / 2 if values.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    format(values[i, j], fmt),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if values[i, j] > high else "black",
                )
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.2, top=0.92, wspace=0.3)
    return fig


def save_confusion_png(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str, title: str = ""
) -> None:
    fig = confusion_figure(matrix, class_names, title)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def metrics_table(results: Evaluation, class_names: Sequence[str]) -> str:
    """A plain-text table: overall, balanced, macro-F1, loss, the many/medium/few-shot accuracies
    (where the training counts are known; a group without classes is "absent"), then accuracy
    (recall) per class."""
    width = max(12, *(len(c) for c in class_names))
    shots = {"many-shot": results.acc_many, "medium-shot": results.acc_medium, "few-shot": results.acc_few}
    known = any(v is not None for v in shots.values())
    lines = [
        f"{'accuracy':<{width}} {results.acc:.4f}",
        f"{'balanced acc':<{width}} {results.balanced_acc:.4f}",
        f"{'macro-F1':<{width}} {results.macro_f1:.4f}",
        f"{'loss':<{width}} {results.loss:.4f}",
        *(
            f"{label:<{width}} " + ("absent" if value is None else f"{value:.4f}")
            for label, value in shots.items()
            if known
        ),
        "",
        f"{'class':<{width}} {'accuracy':>8} {'images':>7}",
    ]
    for name, acc, row in zip(class_names, results.acc_per_class, results.confusion_matrix, strict=True):
        lines.append(f"{name:<{width}} {acc:>8.4f} {sum(row):>7d}")
    return "\n".join(lines)
