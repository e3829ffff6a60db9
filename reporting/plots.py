"""The report's plots, drawn with matplotlib (already a dependency) as PNG bytes to embed.

Static pictures rather than an interactive library: plotly would add megabytes of JavaScript
to every file (or a CDN a report opened offline cannot reach), and a report is read, not
explored; TensorBoard is there for zooming. Each plot's title says what it shows.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from data.names import shortened


def png(figure: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def curves(
    epochs: Sequence[int], lines: Mapping[str, Sequence[float | None]], title: str, ylabel: str
) -> bytes:
    """One chart of per-epoch lines (a missing value leaves a gap)."""
    figure, axis = plt.subplots(figsize=(5.2, 3.2))
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    for label, values in lines.items():
        axis.plot(
            epochs, [float("nan") if v is None else v for v in values], marker="o", markersize=3, label=label
        )
    axis.set_title(title, fontsize=10)
    axis.set_xlabel("epoch")
    axis.set_ylabel(ylabel)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, ncol=2 if len(lines) > 5 else 1, loc="best")
    return png(figure)


def class_histogram(names: Sequence[str], counts: Sequence[int], title: str) -> bytes:
    """Training images per class, largest first: the imbalance at a glance."""
    order = sorted(range(len(names)), key=lambda i: -counts[i])
    many = len(names) > 40
    figure, axis = plt.subplots(figsize=(5.2, 3.2))
    axis.bar(range(len(order)), [counts[i] for i in order], color="#4a78b0")
    if not many:
        axis.set_xticks(
            range(len(order)), [shortened(names[i], 16) for i in order], rotation=60, ha="right", fontsize=8
        )
    else:
        axis.set_xlabel(f"{len(names)} classes, largest first")
    axis.set_ylabel("training images")
    axis.set_title(title, fontsize=10)
    axis.grid(axis="y", alpha=0.3)
    return png(figure)
