"""Validation metrics for imbalanced classification, computed with torchmetrics.

Overall accuracy hides rare classes, so every validation also reports balanced accuracy (the
mean per-class recall), macro-F1, per-class accuracy (recall) and the confusion matrix.
torchmetrics keeps the counts as states that a distributed run can synchronise.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score


class ClassificationMetrics:
    """Accumulates logits and labels of one evaluation pass; ``compute`` returns the metrics."""

    def __init__(self, num_classes: int, device: torch.device) -> None:
        self.collection = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "balanced_acc": MulticlassAccuracy(num_classes, average="macro"),
                "macro_f1": MulticlassF1Score(num_classes, average="macro"),
                "acc_per_class": MulticlassAccuracy(num_classes, average="none"),
                "confusion_matrix": MulticlassConfusionMatrix(num_classes),
            }
        ).to(device)
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        self.count = 0

    def reset(self) -> None:
        self.collection.reset()
        self.loss_sum.zero_()
        self.count = 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        logits = logits.float()  # (N, C)
        # val loss is plain cross-entropy, comparable across training losses
        self.loss_sum += F.cross_entropy(logits, target, reduction="sum").double()
        self.count += target.numel()
        self.collection.update(logits, target)

    def compute(self) -> dict[str, float | list[float] | list[list[int]]]:
        out = self.collection.compute()  # torchmetrics sums its counts over all ranks
        totals = torch.stack(
            [self.loss_sum, torch.tensor(float(self.count), device=self.loss_sum.device, dtype=torch.float64)]
        )
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
        return {
            "loss": (totals[0] / totals[1].clamp_min(1)).item(),
            "acc": out["acc"].item(),
            "balanced_acc": out["balanced_acc"].item(),
            "macro_f1": out["macro_f1"].item(),
            "acc_per_class": out["acc_per_class"].tolist(),
            "confusion_matrix": out["confusion_matrix"].long().tolist(),
        }


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    metrics: ClassificationMetrics,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    flip_tta: bool = False,
) -> dict[str, Any]:
    """Loss (plain cross-entropy) and metrics of ``model`` over every batch of ``loader``.

    ``flip_tta`` averages the logits of each image and its horizontal mirror.
    """
    model.eval()
    metrics.reset()
    for images, target in loader:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images).float()  # (N, C)
            if flip_tta:
                logits = (logits + model(images.flip(-1)).float()) / 2
        metrics.update(logits, target.to(device, non_blocking=True))
    return metrics.compute()
