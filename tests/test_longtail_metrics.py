"""Many/medium/few-shot accuracy, post-hoc adjusted balanced accuracy, collapse warnings, crop scales."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from data.augment import LARGE_SCALE, SMALL_SCALE, choose_scale, native_size
from losses import CrossEntropyLoss, LDAMLoss
from trainer.evaluation.collapse import collapse_symptom
from trainer.evaluation.metrics import ClassificationMetrics, Evaluation, ShotThresholds, shot_accuracies
from trainer.hooks.collapse import CollapseWatch

COUNTS = [150, 101, 100, 20, 19, 3]  # many: >100, few: <20, medium: the rest (boundaries included)


def test_shot_groups_follow_the_thresholds_and_absent_groups_are_none():
    acc = [0.9, 0.8, 0.7, 0.6, 0.5, 0.1]
    got = shot_accuracies(acc, COUNTS, ShotThresholds())
    assert got["acc_many"] == pytest.approx((0.9 + 0.8) / 2)
    assert got["acc_medium"] == pytest.approx((0.7 + 0.6) / 2)
    assert got["acc_few"] == pytest.approx((0.5 + 0.1) / 2)
    only_few = shot_accuracies([0.2, 0.4], [5, 7], ShotThresholds())
    assert only_few == {"acc_many": None, "acc_medium": None, "acc_few": pytest.approx(0.3)}
    assert shot_accuracies(acc, COUNTS, ShotThresholds(many=10, few=5))["acc_few"] == pytest.approx(0.1)


def test_adjusted_balanced_accuracy_is_that_of_argmax_z_minus_log_prior():
    g = torch.Generator().manual_seed(0)
    counts = [1000, 10, 10]
    logits = torch.randn(300, 3, generator=g) + torch.tensor([2.0, 0.0, 0.0])  # biased to the head
    target = torch.randint(0, 3, (300,), generator=g)
    metrics = ClassificationMetrics(3, torch.device("cpu"), class_counts=counts, posthoc_tau=1.0)
    metrics.update(logits, target)
    res = metrics.compute()
    adjusted = (logits - torch.log(torch.tensor(counts) / sum(counts))).argmax(1)
    recall = [((adjusted == c) & (target == c)).sum() / (target == c).sum() for c in range(3)]
    assert res.balanced_acc_adjusted == pytest.approx(float(sum(recall) / 3), abs=1e-6)
    assert res.balanced_acc_adjusted > res.balanced_acc  # the adjustment undoes the head bias
    assert res.acc_many is not None and res.acc_medium is None and res.acc_few is not None
    plain = ClassificationMetrics(3, torch.device("cpu"))
    plain.update(logits, target)
    assert set(plain.compute().scalars()) == {
        "loss",
        "acc",
        "balanced_acc",
        "macro_f1",
        "gmean",
        "ece",
    }  # nothing absent as 0


def results(matrix, loss=1.0):
    n = len(matrix)
    return Evaluation(loss, 0.0, 0.0, 0.0, 0.0, [0.0] * n, matrix)


def test_collapse_symptoms():
    names = ["a", "b", "c"]
    assert "'b'" in collapse_symptom(results([[0, 5, 0], [0, 5, 0], [0, 5, 0]]), names)
    assert "ln 3" in collapse_symptom(results([[5, 0, 0], [3, 2, 0], [1, 0, 4]], math.log(3)), names)
    assert collapse_symptom(results([[5, 0, 0], [3, 2, 0], [1, 0, 4]]), names) is None


def test_collapse_watch_fires_once_on_two_collapsed_epochs_and_not_on_one(caplog):
    collapsed, healthy = results([[4, 0], [4, 0]]), results([[3, 1], [1, 3]])
    watch = CollapseWatch(["x", "y"], epochs=10)
    with caplog.at_level(logging.WARNING):
        ldam = LDAMLoss.collapse_advice  # the loss's own advice comes first
        assert not watch.check(1, collapsed, CrossEntropyLoss.collapse_advice)  # a first epoch may do this
        assert not watch.check(2, healthy, CrossEntropyLoss.collapse_advice)
        assert not watch.check(3, collapsed, ldam)
        assert watch.check(4, collapsed, ldam)
        assert not watch.check(5, collapsed, ldam)  # once per run
    assert len(caplog.records) == 1 and "PREDICTIONS COLLAPSED at epoch 4" in caplog.text
    assert "model.cosine_scale" in caplog.text and "optimizer.lr" in caplog.text
    last = CollapseWatch(["x", "y"], epochs=1)
    assert last.check(1, collapsed, None)  # a one-epoch run ends collapsed: say so


def test_native_size_and_scale_choice(tmp_path, caplog):
    from PIL import Image

    for i, side in enumerate((28, 28, 30, 500)):
        Image.new("L", (side, side + 4)).save(tmp_path / f"{i}.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    paths = sorted(str(p) for p in tmp_path.iterdir())
    assert native_size(paths) == 29  # median of 28, 28, 30, 500; the unreadable file is ignored
    assert native_size([str(tmp_path / "bad.png")]) is None
    assert choose_scale(None, 28) == SMALL_SCALE
    assert choose_scale(None, 300) == LARGE_SCALE and choose_scale(None, None) == LARGE_SCALE
    with caplog.at_level(logging.WARNING):
        assert choose_scale([0.08, 1.0], 300) == [0.08, 1.0]
        assert not caplog.records
        assert choose_scale([0.08, 1.0], 28) == [0.08, 1.0]  # kept as given, but with a warning
    assert "dataset.scale=[0.08, 1.0]" in caplog.text and "28 px" in caplog.text


def test_ece_is_the_gap_between_confidence_and_accuracy():
    # every image predicted class 0 with probability 0.9; half of them are class 0
    logits = torch.log(torch.tensor([[0.9, 0.05, 0.05]])).repeat(40, 1)
    target = torch.tensor([0, 1] * 20)
    metrics = ClassificationMetrics(3, torch.device("cpu"))
    metrics.update(logits, target)
    assert metrics.compute().ece == pytest.approx(0.4, abs=1e-5)
    # logits that happen to lie in [0, 1] are still logits, not probabilities
    metrics.reset()
    metrics.update(torch.tensor([[0.9, 0.0, 0.0]]).repeat(40, 1), target)
    confidence = torch.tensor([0.9, 0.0, 0.0]).softmax(0)[0].item()
    assert metrics.compute().ece == pytest.approx(abs(confidence - 0.5), abs=1e-5)
