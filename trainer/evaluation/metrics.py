"""Validation metrics for imbalanced classification, all from counts kept on the device.

Overall accuracy hides rare classes, so every validation also reports balanced accuracy (the
mean per-class recall), macro-F1, the geometric mean of the per-class recalls (G-mean, the
imbalanced-learning standard of Kubat and Matwin, ICML 1997: one missed class makes it 0),
per-class accuracy (recall) and the confusion matrix.
Every one of them is a ratio of the confusion matrix's counts, so one matrix is counted (and,
in a distributed run, summed over ranks) and the numbers, the figure and the end's per-class
report all come from it. They follow torchmetrics' definitions, against which the tests check
them: a macro average leaves out a class that is neither in the labels nor in the predictions,
and 0/0 counts as 0; but a class without validation images has no recall (None, "not
validated": its 0/0 is not a miss), and the recall-based means (balanced accuracy, as
scikit-learn's ``balanced_accuracy_score``, the G-mean, the shot groups) leave it out.
torchmetrics itself is not imported: its package loads scipy.signal and matplotlib.pyplot, over a
second of every run's start on a CPU.

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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from losses.logit_adjusted import log_prior
from trainer.evaluation.calibration import ECE_BINS, calibration_gaps
from trainer.results import POSTHOC, SHOT_GROUPS, validation_names


@dataclass(frozen=True)
class Evaluation:
    """One evaluation pass of a model over a dataset: every number the run and the scripts report."""

    loss: float  # plain cross-entropy of the logits, comparable across training losses
    acc: float
    balanced_acc: float  # mean per-class recall
    macro_f1: float
    ece: float  # expected calibration error of softmax(logits), 15 bins: |confidence - accuracy|
    acc_per_class: list[float | None]  # None: the class has no validation image (not validated)
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted
    balanced_acc_adjusted: float | None = None  # of argmax(z - tau log prior); None: not computed
    acc_many: float | None = None  # None: no class in the group, or no training counts
    acc_medium: float | None = None
    acc_few: float | None = None
    # the confusion matrix as an array, when the computation had one: reporting many classes then
    # never walks the nested lists (a million Python ints for 1,000 classes)
    counts: np.ndarray | None = field(default=None, compare=False, repr=False)
    posthoc_tau: float | None = None  # the tau of balanced_acc_adjusted
    gmean: float | None = None  # geometric mean of the recalls of the classes with validation images

    def matrix(self) -> np.ndarray:
        """The confusion matrix (C, C) as an integer array (rows: true class)."""
        return self.counts if self.counts is not None else np.asarray(self.confusion_matrix, dtype=np.int64)

    def scalars(self) -> dict[str, float]:
        """Every per-model number by name (``trainer.results``), those not computed left out."""
        values = {name: getattr(self, name) for name in validation_names()}
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
    acc_per_class: Sequence[float | None], class_counts: Sequence[int], thresholds: ShotThresholds
) -> dict[str, float | None]:
    """``{"acc_many": ..., "acc_medium": ..., "acc_few": ...}``: mean recall of each group's
    validated classes, None if it has none."""
    out: dict[str, float | None] = {}
    for group in SHOT_GROUPS:
        pairs = zip(acc_per_class, class_counts, strict=True)
        accs = [a for a, n in pairs if a is not None and thresholds.group(n) == group]
        out[f"acc_{group}"] = sum(accs) / len(accs) if accs else None
    return out


def confusion_scores(matrix: torch.Tensor) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1 and per-class recall of a confusion matrix (C, C)
    (rows: true class), as torchmetrics' multiclass metrics define them (see the module)."""
    counts = matrix.double()
    tp = counts.diagonal()
    support, predicted = counts.sum(1), counts.sum(0)
    fn, fp = support - tp, predicted - tp
    recall = torch.where(support > 0, tp / support.clamp_min(1), 0.0)
    f1 = torch.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn).clamp_min(1), 0.0)
    seen = (tp + fp + fn) > 0  # a class absent from labels and predictions is not averaged

    def macro(score: torch.Tensor) -> float:
        return score[seen].mean().item() if seen.any() else 0.0

    validated = recall[support > 0]  # a class without validation images has no recall
    total = counts.sum().item()
    return {
        "acc": tp.sum().item() / total if total else 0.0,
        "balanced_acc": validated.mean().item() if len(validated) else 0.0,
        "macro_f1": macro(f1),
        "gmean": validated.log().mean().exp().item() if len(validated) else 0.0,  # log(0) = -inf: 0
        "acc_per_class": [
            r if n > 0 else None for r, n in zip(recall.tolist(), support.tolist(), strict=True)
        ],
    }


class ClassificationMetrics:
    """Accumulates logits and labels of one evaluation pass; ``compute`` returns the metrics.

    ``class_counts`` (the training images per class) adds the many/medium/few-shot accuracies
    and, with ``posthoc_tau``, the balanced accuracy of post-hoc logit-adjusted predictions.
    The state is counts on the device (the confusion matrix, the calibration bins' sums, the
    loss sum), summed over ranks by one all-reduce in ``compute``.
    """

    def __init__(
        self,
        num_classes: int,
        device: torch.device,
        class_counts: Sequence[int] | None = None,
        thresholds: ShotThresholds = ShotThresholds(),
        posthoc_tau: float | None = None,
    ) -> None:
        self.num_classes = num_classes
        self.class_counts = list(class_counts) if class_counts is not None else None
        self.thresholds = thresholds
        self.with_adjusted = posthoc_tau is not None and self.class_counts is not None
        self.posthoc_tau = posthoc_tau
        if self.with_adjusted:
            # tau * log prior once, on the device: no host-to-device copy per validation batch
            self.posthoc_offset = posthoc_tau * log_prior(self.class_counts).to(device)  # (C,)
        cells = num_classes * num_classes
        # one float64 vector, so a distributed run sums it in one all-reduce; exact for counts
        # below 2**53: [confusion (C*C), adjusted confusion (C*C), calibration gaps, loss, images]
        self.sizes = [cells, cells if self.with_adjusted else 0, ECE_BINS + 1, 1, 1]
        self.state = torch.zeros(sum(self.sizes), dtype=torch.float64, device=device)
        self.parts = self.state.split(self.sizes)  # views into the state

    def reset(self) -> None:
        self.state.zero_()

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        confusion, adjusted, gaps, loss_sum, images = self.parts
        logits = logits.float()  # (N, C)
        n = self.num_classes
        # val loss is plain cross-entropy, comparable across training losses
        loss_sum += F.cross_entropy(logits, target, reduction="sum").double()
        images += target.numel()
        cells = target * n + logits.argmax(dim=1)  # (N,) the confusion matrix's cell of each image
        confusion += torch.bincount(cells, minlength=n * n)
        if self.with_adjusted:
            cells = target * n + (logits - self.posthoc_offset).argmax(dim=1)
            adjusted += torch.bincount(cells, minlength=n * n)
        gaps += calibration_gaps(logits.softmax(dim=1), target)

    def compute(self) -> Evaluation:
        state = self.state.clone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(state)  # every rank gets the counts of all ranks
        confusion, adjusted, gaps, loss_sum, images = (part.cpu() for part in state.split(self.sizes))
        n, count = self.num_classes, images.item()
        matrix = confusion.view(n, n)
        scores = confusion_scores(matrix)
        optional: dict[str, Any] = {}
        if self.with_adjusted:
            optional[POSTHOC] = confusion_scores(adjusted.view(n, n))["balanced_acc"]
            optional["posthoc_tau"] = self.posthoc_tau
        if self.class_counts is not None:
            optional |= shot_accuracies(scores["acc_per_class"], self.class_counts, self.thresholds)
        return Evaluation(
            loss=loss_sum.item() / max(count, 1),
            ece=gaps.abs().sum().item() / max(count, 1),
            confusion_matrix=matrix.long().tolist(),
            counts=matrix.long().cpu().numpy(),
            **scores,
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
    predictions: Any = None,
) -> Evaluation:
    """Loss (plain cross-entropy of the model's logits), calibration and metrics of ``model``
    over every batch of ``loader``; ``predictions`` (a gallery's ``Predictions``) also keeps each
    image's prediction by dataset index (the loader's ``indices`` of each batch)."""
    metrics.reset()
    for logits, target in forward_batches(model, loader, device, amp_dtype, channels_last, progress=progress):
        metrics.update(logits, target)
        if predictions is not None:
            predictions.add(loader.indices, logits)
    return metrics.compute()
