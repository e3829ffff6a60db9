"""Validation metrics for imbalanced classification, computed with torchmetrics.

Overall accuracy hides rare classes, so every validation also reports balanced accuracy (the
mean per-class recall), macro-F1, per-class accuracy (recall) and the confusion matrix.
torchmetrics keeps the counts as states that a distributed run can synchronise.

As the long-tail literature reports it (Liu et al., CVPR 2019, "Large-Scale Long-Tailed
Recognition in an Open World"; Kang et al., ICLR 2020), accuracy is also split by how many
training images a class has: many-shot (more than ``many`` images, 100 by default), medium-shot
(``few`` to ``many``) and few-shot (fewer than ``few``, 20). Each group's accuracy is the mean
recall of its classes (on a balanced validation split, the accuracy over its images); a group
with no class is absent (None), never 0.

With the training counts given, validation also reports the balanced accuracy that post-hoc
logit adjustment (Menon et al., ICLR 2021) would give: argmax of z - tau * log(prior).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from losses.logit_adjusted import log_prior
from trainer.calibration import ECE_BINS
from trainer.config import POSTHOC_METRIC, VAL_METRICS

SHOT_GROUPS = ("many", "medium", "few")
# The per-epoch numbers of one validation; the optional ones are left out (an empty CSV cell)
# when absent.
SCALARS = VAL_METRICS
OPTIONAL_SCALARS = (POSTHOC_METRIC, *(f"acc_{g}" for g in SHOT_GROUPS))


@dataclass(frozen=True)
class Evaluation:
    """One evaluation pass of a model over a dataset: every number the run and the scripts report."""

    loss: float  # plain cross-entropy of the logits, comparable across training losses
    acc: float
    balanced_acc: float  # mean per-class recall
    macro_f1: float
    ece: float  # expected calibration error of softmax(logits), 15 bins: |confidence - accuracy|
    acc_per_class: list[float]
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted
    balanced_acc_adjusted: float | None = None  # of argmax(z - tau log prior); None: not computed
    acc_many: float | None = None  # None: no class in the group, or no training counts
    acc_medium: float | None = None
    acc_few: float | None = None

    def scalars(self) -> dict[str, float]:
        """The headline numbers by name (SCALARS, and the OPTIONAL_SCALARS that were computed)."""
        values = {name: getattr(self, name) for name in (*SCALARS, *OPTIONAL_SCALARS)}
        return {name: value for name, value in values.items() if value is not None}


@dataclass(frozen=True)
class ShotThresholds:
    """Many-shot: more than ``many`` training images; few-shot: fewer than ``few``; else medium."""

    many: int = 100
    few: int = 20

    def group(self, count: int) -> str:
        if count > self.many:
            return "many"
        return "few" if count < self.few else "medium"


def shot_accuracies(
    acc_per_class: Sequence[float], class_counts: Sequence[int], thresholds: ShotThresholds
) -> dict[str, float | None]:
    """``{"acc_many": ..., "acc_medium": ..., "acc_few": ...}``: mean recall per group, None if empty."""
    out: dict[str, float | None] = {}
    for group in SHOT_GROUPS:
        accs = [a for a, n in zip(acc_per_class, class_counts, strict=True) if thresholds.group(n) == group]
        out[f"acc_{group}"] = sum(accs) / len(accs) if accs else None
    return out


class ClassificationMetrics:
    """Accumulates logits and labels of one evaluation pass; ``compute`` returns the metrics.

    ``class_counts`` (the training images per class) adds the many/medium/few-shot accuracies
    and, with ``posthoc_tau``, the balanced accuracy of post-hoc logit-adjusted predictions.
    torchmetrics (over a second to import) loads at the first ``reset``, the first validation.
    """

    def __init__(
        self,
        num_classes: int,
        device: torch.device,
        class_counts: Sequence[int] | None = None,
        thresholds: ShotThresholds = ShotThresholds(),
        posthoc_tau: float | None = None,
    ) -> None:
        self.num_classes, self.device = num_classes, device
        self.class_counts = list(class_counts) if class_counts is not None else None
        self.thresholds = thresholds
        self.with_adjusted = posthoc_tau is not None and self.class_counts is not None
        if self.with_adjusted:
            # tau * log prior once, on the device: no host-to-device copy per validation batch
            self.posthoc_offset = posthoc_tau * log_prior(self.class_counts).to(device)  # (C,)
        self.loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        self.count = 0
        self.collection: Any = None

    def build(self) -> None:
        from torchmetrics import MetricCollection
        from torchmetrics.classification import (
            MulticlassAccuracy,
            MulticlassCalibrationError,
            MulticlassConfusionMatrix,
            MulticlassF1Score,
        )

        n, device = self.num_classes, self.device
        metrics = {
            "acc": MulticlassAccuracy(n, average="micro"),
            "balanced_acc": MulticlassAccuracy(n, average="macro"),
            "macro_f1": MulticlassF1Score(n, average="macro"),
            "acc_per_class": MulticlassAccuracy(n, average="none"),
            "confusion_matrix": MulticlassConfusionMatrix(n),
        }
        self.collection = MetricCollection(metrics).to(device)
        # fed probabilities: given logits, torchmetrics would take values within [0, 1] as probabilities
        self.calibration = MulticlassCalibrationError(n, n_bins=ECE_BINS, norm="l1").to(device)
        self.adjusted = MulticlassAccuracy(n, average="macro").to(device) if self.with_adjusted else None

    def reset(self) -> None:
        if self.collection is None:
            self.build()
        self.collection.reset()
        self.calibration.reset()
        if self.adjusted is not None:
            self.adjusted.reset()
        self.loss_sum.zero_()
        self.count = 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        if self.collection is None:
            self.build()
        logits = logits.float()  # (N, C)
        # val loss is plain cross-entropy, comparable across training losses
        self.loss_sum += F.cross_entropy(logits, target, reduction="sum").double()
        self.count += target.numel()
        self.collection.update(logits, target)
        self.calibration.update(logits.softmax(dim=1), target)
        if self.adjusted is not None:
            self.adjusted.update(logits - self.posthoc_offset, target)

    def compute(self) -> Evaluation:
        out = self.collection.compute()  # torchmetrics sums its counts over all ranks
        totals = torch.stack(
            [self.loss_sum, torch.tensor(float(self.count), device=self.loss_sum.device, dtype=torch.float64)]
        )
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
        acc_per_class = out["acc_per_class"].tolist()
        optional: dict[str, Any] = {}
        if self.adjusted is not None:
            optional[POSTHOC_METRIC] = self.adjusted.compute().item()
        if self.class_counts is not None:
            optional |= shot_accuracies(acc_per_class, self.class_counts, self.thresholds)
        return Evaluation(
            loss=(totals[0] / totals[1].clamp_min(1)).item(),
            acc=out["acc"].item(),
            balanced_acc=out["balanced_acc"].item(),
            macro_f1=out["macro_f1"].item(),
            ece=self.calibration.compute().item(),
            acc_per_class=acc_per_class,
            confusion_matrix=out["confusion_matrix"].long().tolist(),
            **optional,
        )


def forward_batches(
    model: torch.nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    flip_tta: bool = False,
    progress: str | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(float32 logits (N, C), labels) of each batch, on ``device``, in eval mode without gradients.
    ``flip_tta`` averages the logits of each image and its horizontal mirror; ``progress`` names
    a progress bar (None: none)."""
    model.eval()
    with torch.no_grad():
        for images, target in tqdm(loader, desc=progress, leave=False, disable=progress is None):
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(images).float()  # (N, C)
                if flip_tta:
                    logits = (logits + model(images.flip(-1)).float()) / 2
            yield logits, target.to(device, non_blocking=True)


def evaluate_model(
    model: torch.nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    metrics: ClassificationMetrics,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: str | None = None,
) -> Evaluation:
    """Loss (plain cross-entropy of the model's logits), calibration and metrics of ``model``
    over every batch of ``loader``."""
    metrics.reset()
    for logits, target in forward_batches(model, loader, device, amp_dtype, channels_last, progress=progress):
        metrics.update(logits, target)
    return metrics.compute()
