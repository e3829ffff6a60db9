"""Logit-adjusted cross-entropy and post-hoc adjustment against their formulas, written out here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers.losses import COUNTS, C, batch

from losses import LogitAdjustedLoss, adjust_logits, effective_number_weights


def reference(logits, t, tau, weight=None):
    """sum_i sum_c -t_ic w_c log softmax(z_i + tau log pi)_c / sum_i sum_c t_ic w_c, loops in float64."""
    total = sum(COUNTS)
    prior = [math.log(n / total) for n in COUNTS]
    w = [1.0] * C if weight is None else [float(x) for x in weight]
    num = den = 0.0
    for i in range(logits.shape[0]):
        z = [float(logits[i, c]) + tau * prior[c] for c in range(C)]
        log_norm = math.log(sum(math.exp(v) for v in z))
        for c in range(C):
            num -= float(t[i, c]) * w[c] * (z[c] - log_norm)
            den += float(t[i, c]) * w[c]
    return num / den


@pytest.mark.parametrize("n", [1, 15, 16, 33])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_hard_and_soft_targets_match_the_formula(n, weighted, tau):
    logits, target, soft = batch(n, seed=n)
    weight = effective_number_weights(COUNTS) if weighted else None
    criterion = LogitAdjustedLoss(COUNTS, tau=tau, class_weights=weight)
    one_hot = F.one_hot(target, C).double()
    assert criterion(logits, target).item() == pytest.approx(
        reference(logits, one_hot, tau, weight), rel=1e-5
    )
    assert criterion(logits, soft).item() == pytest.approx(reference(logits, soft, tau, weight), rel=1e-5)


def test_tau_zero_is_cross_entropy():
    logits, target, soft = batch(16, seed=3)
    criterion = LogitAdjustedLoss(COUNTS, tau=0.0)
    assert torch.equal(criterion(logits, target), F.cross_entropy(logits, target))
    assert criterion(logits, soft).item() == pytest.approx(F.cross_entropy(logits, soft).item(), rel=1e-6)
    smoothed = LogitAdjustedLoss(COUNTS, tau=0.0, label_smoothing=0.1)(logits, target)
    assert smoothed.item() == pytest.approx(
        F.cross_entropy(logits, target, label_smoothing=0.1).item(), rel=1e-6
    )


def test_rare_classes_get_the_larger_margin():
    """Equal logits: the loss of a rare-class target is higher, so training pushes its logit further."""
    logits = torch.zeros(2, C)
    criterion = LogitAdjustedLoss(COUNTS)
    rare, common = criterion(logits[:1], torch.tensor([5])), criterion(logits[:1], torch.tensor([0]))
    assert rare.item() > common.item()
    assert rare.item() == pytest.approx(-math.log(12 / sum(COUNTS)), rel=1e-5)  # -log pi_y exactly


def test_float32_under_autocast_drw_and_bad_tau():
    logits, target, soft = batch(8, seed=4)
    criterion = LogitAdjustedLoss(COUNTS, drw_epoch=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert criterion(logits.bfloat16(), soft).dtype == torch.float32
    before = criterion(logits, target)
    criterion.set_epoch(2)
    weighted = reference(logits, F.one_hot(target, C).double(), 1.0, effective_number_weights(COUNTS))
    assert criterion(logits, target).item() == pytest.approx(weighted, rel=1e-5) != before.item()
    with pytest.raises(ValueError, match="loss.tau"):
        LogitAdjustedLoss(COUNTS, tau=-1.0)


def test_post_hoc_adjustment_subtracts_the_log_prior():
    logits, _, _ = batch(5, seed=5)
    adjusted = adjust_logits(logits, COUNTS, tau=1.0)
    expected = logits.double() - torch.tensor(
        [math.log(n / sum(COUNTS)) for n in COUNTS], dtype=torch.float64
    )
    assert torch.allclose(adjusted.double(), expected, atol=1e-6)
    assert torch.equal(adjust_logits(logits, COUNTS, tau=0.0), logits)
