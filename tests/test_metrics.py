"""The validation metrics and the per-class report against torchmetrics, scikit-learn and
imbalanced-learn (G-mean); the confusion picture's colours."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from imblearn.metrics import geometric_mean_score
from sklearn.metrics import balanced_accuracy_score, classification_report
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from trainer.evaluation.calibration import expected_calibration_error
from trainer.evaluation.figures import blues, confusion_image
from trainer.evaluation.metrics import ClassificationMetrics
from trainer.evaluation.reports import class_report


def cases(count: int, seed: int = 0):
    """(logits, target) of random sizes: some classes without labels, some never predicted,
    some confidences of exactly 1."""
    g = torch.Generator().manual_seed(seed)
    for i in range(count):
        classes = int(torch.randint(2, 9, (1,), generator=g))
        n = int(torch.randint(1, 80, (1,), generator=g))
        labelled = torch.randperm(classes, generator=g)[
            : int(torch.randint(1, classes + 1, (1,), generator=g))
        ]
        target = labelled[torch.randint(0, len(labelled), (n,), generator=g)]
        logits = torch.randn(n, classes, generator=g) * float(torch.rand(1, generator=g) * 6)
        if i % 7 == 0:
            logits[:, 0] += 50  # softmax gives exactly 1.0: torchmetrics' bin of its own
        yield logits, target


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_metrics_equal_torchmetrics_over_batches_with_absent_classes():
    checked_absent = checked_gmean = False
    for logits, target in cases(150):
        classes = logits.shape[1]
        metrics = ClassificationMetrics(classes, torch.device("cpu"))
        half = len(target) // 2
        metrics.update(logits[:half], target[:half])
        metrics.update(logits[half:], target[half:])
        got = metrics.compute()
        expected = {
            "acc": MulticlassAccuracy(classes, average="micro")(logits, target),
            # the mean recall of the classes with labels: a class only predicted has no recall
            "balanced_acc": torch.tensor(balanced_accuracy_score(target.numpy(), logits.argmax(1).numpy())),
            "macro_f1": MulticlassF1Score(classes, average="macro")(logits, target),
            "ece": MulticlassCalibrationError(classes, n_bins=15, norm="l1")(logits.softmax(1), target),
        }
        for name, value in expected.items():
            assert getattr(got, name) == pytest.approx(value.item(), abs=1e-6), name
        # G-mean over the classes with validation images, as imbalanced-learn computes it
        validated = np.unique(target.numpy())
        gmean = geometric_mean_score(target.numpy(), logits.argmax(1).numpy(), labels=validated)
        assert got.gmean == pytest.approx(gmean, abs=1e-6)
        checked_gmean |= 0 < gmean < 1
        per_class = MulticlassAccuracy(classes, average="none")(logits, target).tolist()
        labelled = set(target.tolist())
        assert [a for a in got.acc_per_class if a is not None] == pytest.approx(
            [a for c, a in enumerate(per_class) if c in labelled], abs=1e-6
        )
        assert [c for c, a in enumerate(got.acc_per_class) if a is None] == sorted(
            set(range(classes)) - labelled
        )
        assert got.confusion_matrix == MulticlassConfusionMatrix(classes)(logits, target).tolist()
        assert got.loss == pytest.approx(torch.nn.functional.cross_entropy(logits, target).item(), rel=1e-6)
        checked_absent |= len(target.unique()) < classes
    assert checked_absent and checked_gmean
    metrics.reset()
    metrics.update(logits[:1], target[:1])
    assert sum(map(sum, metrics.compute().confusion_matrix)) == 1  # reset forgot the last pass


def test_expected_calibration_error_equals_torchmetrics():
    for logits, target in cases(40, seed=1):
        expected = MulticlassCalibrationError(logits.shape[1], n_bins=15, norm="l1")(
            logits.softmax(1), target
        )
        assert expected_calibration_error(logits, target) == pytest.approx(expected.item(), abs=1e-6)


def test_class_report_is_scikit_learns_layout_and_numbers():
    rng = np.random.default_rng(0)
    for i in range(120):
        classes = int(rng.integers(2, 9))
        matrix = rng.integers(0, 6, (classes, classes))
        matrix[rng.random((classes, classes)) < 0.4] = 0
        if i % 5 == 0:
            matrix[int(rng.integers(classes))] = 0  # a class without images
        if matrix.sum() == 0:
            continue
        names = ["class_" * int(rng.integers(0, 3)) + str(c) for c in range(classes)]
        true, pred = np.nonzero(matrix)
        n = matrix[true, pred]
        expected = classification_report(
            np.repeat(true, n),
            np.repeat(pred, n),
            labels=list(range(classes)),
            target_names=names,
            digits=4,
            zero_division=0,
        ).rstrip("\n")
        # scikit-learn prints the supports as 7.0 when some class has none; ours stay integers
        expected = re.sub(r" ( *)(\d+)\.0$", lambda m: "   " + m.group(1) + m.group(2), expected, flags=re.M)
        assert class_report(matrix.tolist(), names) == expected


def test_confusion_image_colours_each_cell_by_its_share_of_the_row():
    matrix = [[4, 0, 0], [1, 3, 0], [0, 0, 0]]  # the last class has no images
    names = ["cat", "dög", "a $b$"]
    image = confusion_image(matrix, names, "val epoch 2")
    pixels = np.asarray(image)
    assert image.mode == "RGB" and image.width < 340
    twelve = confusion_image(np.eye(12, dtype=int).tolist(), [f"class {c}" for c in range(12)])
    assert twelve.width <= 340  # the width of TensorBoard's image card: shown unshrunk
    # find the grid: the darkest pixels are the 100% cell (0, 0)
    dark = np.argwhere((pixels == blues(np.array(1.0))).all(axis=2))
    top, left = dark.min(axis=0)
    bottom, right = dark.max(axis=0)
    cell = right - left + 1
    assert bottom - top + 1 == cell and 18 <= cell <= 40

    def colour(i, j):  # a corner of the cell, clear of its text
        return tuple(pixels[top + i * cell + 2, left + j * cell + 2])

    assert colour(1, 1) == tuple(blues(np.array(0.75)))
    assert colour(1, 0) == tuple(blues(np.array(0.25)))
    assert colour(0, 1) == colour(2, 2) == tuple(blues(np.array(0.0)))  # empty cells, empty row
    assert blues(np.array(0.0)).sum() > blues(np.array(0.5)).sum() > blues(np.array(1.0)).sum()
    assert confusion_image(matrix, names, scale=2).width == pytest.approx(2 * image.width, abs=40)
