"""LDAM, focal and cross-entropy against their formulas, F.cross_entropy, and the pasted loss's defects."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers.losses import COUNTS, C, batch

from losses import CrossEntropyLoss, FocalLoss, LDAMLoss, effective_number_weights
from losses.ldam import ldam_margins


def ldam_reference(logits, target, counts, max_m, s, weight=None):
    """Cao et al.'s LDAM, written out per sample with Python loops."""
    m = [max_m * (n**-0.25) / (min(counts) ** -0.25) for n in counts]
    z = logits.clone().double()
    for i, y in enumerate(target.tolist()):
        z[i, y] -= m[y]
    w = None if weight is None else weight.double()
    return F.cross_entropy(s * z, target, weight=w)


def soft_reference(logits, t, margins, s, weight):
    """sum_i sum_c -t_ic w_c log softmax(s (z - t m))_ic / sum_i sum_c t_ic w_c, in float64."""
    w = torch.ones(logits.shape[1], dtype=torch.float64) if weight is None else weight.double()
    z = s * (logits.double() - t.double() * margins.double())
    log_p = torch.log_softmax(z, dim=1)
    return -(t.double() * w * log_p).sum() / (t.double() * w).sum()


def test_margins_follow_the_quarter_power_rule():
    m = ldam_margins(COUNTS, max_m=0.5)
    expected = torch.tensor([0.5 * (n / min(COUNTS)) ** -0.25 for n in COUNTS])
    assert torch.allclose(m, expected)
    assert m.max().item() == pytest.approx(0.5) and m.argmax().item() == COUNTS.index(min(COUNTS))


@pytest.mark.parametrize("n", [1, 15, 16, 33])
@pytest.mark.parametrize("weighted", [False, True])
def test_ldam_hard_targets_match_the_formula(n, weighted):
    logits, target, _ = batch(n)
    weight = effective_number_weights(COUNTS) if weighted else None
    # the cosine head hands the loss s * cos; the paper's formula acts on the cosines
    loss = LDAMLoss(COUNTS, max_m=0.5, s=30.0, weight=weight)(30.0 * logits, target)
    ref = ldam_reference(logits, target, COUNTS, 0.5, 30.0, weight)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize("n", [1, 15, 16, 33])
@pytest.mark.parametrize("weighted", [False, True])
def test_ldam_soft_targets_match_the_formula(n, weighted):
    logits, _, soft = batch(n, seed=1)
    weight = effective_number_weights(COUNTS) if weighted else None
    criterion = LDAMLoss(COUNTS, s=30.0, weight=weight)
    ref = soft_reference(logits, soft, ldam_margins(COUNTS, 0.5), 30.0, weight)
    assert criterion(30.0 * logits, soft).item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize("weight", [None, "balanced", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]])
def test_ldam_one_hot_equals_index_targets(weight):
    logits, target, _ = batch(16, seed=2)
    criterion = LDAMLoss(COUNTS, weight=weight)
    one_hot = F.one_hot(target, C).float()
    assert criterion(logits, one_hot).item() == pytest.approx(criterion(logits, target).item(), rel=1e-6)


def test_ldam_without_margin_and_scale_is_cross_entropy():
    logits, target, soft = batch(15, seed=3)
    criterion = LDAMLoss(COUNTS, max_m=0.0, s=1.0)
    assert torch.allclose(criterion(logits, target), F.cross_entropy(logits, target))
    assert torch.allclose(criterion(logits, soft), F.cross_entropy(logits, soft))


def test_ldam_label_smoothing_equals_smoothed_soft_targets():
    logits, target, _ = batch(8, seed=4)
    smoothed = F.one_hot(target, C).float() * 0.9 + 0.1 / C
    a = LDAMLoss(COUNTS, label_smoothing=0.1)(logits, target)
    b = LDAMLoss(COUNTS)(logits, smoothed)
    assert torch.allclose(a, b)


# The loss our first user pasted, defect by defect (see seed-notes).
def test_ldam_subtracts_the_margin_from_the_true_class_only():
    logits, target, _ = batch(16, seed=5)
    ldam = LDAMLoss(COUNTS, s=30.0)(30.0 * logits, target)
    plain = F.cross_entropy(30.0 * logits, target)  # what the pasted loss silently computed
    assert ldam.item() > plain.item() + 1e-3
    # only the true-class logit moves: raising another class's logit changes nothing in the margin
    one = torch.zeros(1, C)
    grad_margin = LDAMLoss(COUNTS, s=1.0)(one, torch.tensor([5])) - F.cross_entropy(one, torch.tensor([5]))
    assert grad_margin.item() > 0


@pytest.mark.parametrize("n", [1, 15, 33])
def test_ldam_takes_any_batch_size(n):
    logits, target, soft = batch(n)
    criterion = LDAMLoss(COUNTS)
    assert criterion(logits, target).shape == () and criterion(logits, soft).shape == ()


def test_ldam_runs_on_the_cpu_and_is_built_by_its_constructor():
    criterion = LDAMLoss(COUNTS, max_m=0.4)
    assert criterion.margins.device.type == "cpu"
    assert criterion.margins.max().item() == pytest.approx(0.4)  # constructor ran


def test_class_weights_are_applied_once():
    logits, target, _ = batch(16, seed=6)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    loss = LDAMLoss(COUNTS, s=30.0, weight=w)(30.0 * logits, target)
    assert loss.item() == pytest.approx(ldam_reference(logits, target, COUNTS, 0.5, 30.0, w).item(), rel=1e-5)


def test_soft_targets_keep_their_rows():
    logits, _, soft = batch(16, seed=7)
    loss = LDAMLoss(COUNTS)(logits, soft)
    assert loss.ndim == 0
    with pytest.raises(ValueError, match="class indices"):
        LDAMLoss(COUNTS)(logits, soft.flatten())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "make",
    [
        lambda: LDAMLoss(COUNTS),
        lambda: FocalLoss(alpha="balanced", cls_num_list=COUNTS),
        lambda: CrossEntropyLoss(COUNTS, class_weights="balanced"),
    ],
)
def test_finite_float32_under_autocast(dtype, make):
    layer = torch.nn.Linear(10, C)
    x = torch.randn(16, 10)
    _, target, soft = batch(16)
    criterion = make()
    for t in (target, soft):
        with torch.autocast("cpu", dtype=dtype):
            logits = layer(x)
            assert logits.dtype == dtype
            loss = criterion(logits, t)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        layer.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_margins_and_weights_are_buffers():
    criterion = LDAMLoss(COUNTS, weight="balanced")
    assert {"margins", "class_weight"} <= set(criterion.state_dict())
    moved = criterion.to(torch.float64)
    assert moved.margins.dtype == torch.float64


def test_effective_number_weights():
    w = effective_number_weights(COUNTS, beta=0.999)
    raw = torch.tensor([(1 - 0.999) / (1 - 0.999**n) for n in COUNTS])
    assert torch.allclose(w, raw / raw.sum() * C)
    assert w.sum().item() == pytest.approx(C)
    assert w.argmax().item() == COUNTS.index(min(COUNTS))
    assert torch.allclose(effective_number_weights(COUNTS, beta=0.0), torch.ones(C))


def test_drw_switches_weights_on_at_its_epoch():
    logits, target, _ = batch(16, seed=8)
    criterion = LDAMLoss(COUNTS, s=30.0, drw_epoch=3)
    unweighted = ldam_reference(logits, target, COUNTS, 0.5, 30.0)
    weighted = ldam_reference(logits, target, COUNTS, 0.5, 30.0, effective_number_weights(COUNTS))
    for epoch, ref in ((1, unweighted), (2, unweighted), (3, weighted), (4, weighted)):
        criterion.set_epoch(epoch)
        assert criterion(30.0 * logits, target).item() == pytest.approx(ref.item(), rel=1e-5), epoch
    with pytest.raises(ValueError, match="drw_epoch"):
        LDAMLoss(COUNTS, drw_epoch=0)


def test_focal_gamma_zero_is_cross_entropy():
    logits, target, soft = batch(33, seed=9)
    focal = FocalLoss(gamma=0.0)
    assert torch.allclose(focal(logits, target), F.cross_entropy(logits, target))
    assert torch.allclose(focal(logits, soft), F.cross_entropy(logits, soft))


@pytest.mark.parametrize("alpha", [None, [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5], "balanced"])
def test_focal_matches_its_formula(alpha):
    logits, target, soft = batch(15, seed=10)
    focal = FocalLoss(gamma=2.0, alpha=alpha, cls_num_list=COUNTS)
    a = (
        torch.ones(C)
        if alpha is None
        else (effective_number_weights(COUNTS) if alpha == "balanced" else torch.tensor(alpha))
    )
    for t in (F.one_hot(target, C).float(), soft):
        p = torch.softmax(logits.double(), dim=1)
        ref = -(t.double() * a.double() * (1 - p) ** 2 * torch.log(p)).sum(1).mean()
        assert focal(logits, t).item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(focal(logits, target), focal(logits, F.one_hot(target, C).float()))


def test_cross_entropy_weights_and_smoothing_agree_with_torch():
    logits, target, _ = batch(16, seed=11)
    w = effective_number_weights(COUNTS)
    ce = CrossEntropyLoss(COUNTS, class_weights="balanced")
    assert torch.allclose(ce(logits, target), F.cross_entropy(logits, target, weight=w))
    assert torch.allclose(ce(logits, F.one_hot(target, C).float()), ce(logits, target))
    smooth = CrossEntropyLoss(label_smoothing=0.1)
    assert torch.allclose(smooth(logits, target), F.cross_entropy(logits, target, label_smoothing=0.1))


def test_bad_loss_settings():
    with pytest.raises(ValueError, match="'balanced'"):
        LDAMLoss(COUNTS, weight="inverse")
    with pytest.raises(ValueError, match="7 classes"):
        LDAMLoss(COUNTS, weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="cls_num_list"):
        FocalLoss(alpha="balanced")
    with pytest.raises(ValueError, match="at least one training image"):
        LDAMLoss([10, 0, 3])
    with pytest.raises(ValueError, match=r"^the logit scale s=0 must be > 0") as err:  # the one wrong value
        LDAMLoss(COUNTS, s=0)
    assert "max_m" not in str(err.value)
    with pytest.raises(ValueError, match=r"^loss.max_m=-1 must be >= 0"):
        LDAMLoss(COUNTS, max_m=-1)


@pytest.mark.parametrize("shape", ["concave", "linear", "convex"])
def test_label_aware_smoothing_follows_the_papers_formula_from_head_to_tail(shape):
    from losses.smoothing import label_aware_epsilons

    counts, head, tail = [500, 120, 40, 5], 0.3, 0.05
    x = [(n - 5) / (500 - 5) for n in counts]
    formula = {
        "concave": [tail + (head - tail) * math.sin(math.pi * v / 2) for v in x],
        "linear": [tail + (head - tail) * v for v in x],
        "convex": [head + (head - tail) * math.sin(1.5 * math.pi + math.pi * v / 2) for v in x],
    }[shape]
    eps = label_aware_epsilons(counts, head, tail, shape)
    assert eps.tolist() == pytest.approx(formula, abs=1e-6)
    assert eps[0].item() == pytest.approx(head) and eps[-1].item() == pytest.approx(tail)


def test_label_aware_smoothing_is_cross_entropy_on_per_class_smoothed_targets():
    from losses import CrossEntropyLoss
    from losses.smoothing import label_aware_epsilons

    counts = [50, 20, 5]
    loss = CrossEntropyLoss(cls_num_list=counts, label_aware_smoothing=[0.4, 0.1], smoothing_shape="linear")
    logits, target = (
        torch.randn(6, 3, generator=torch.Generator().manual_seed(0)),
        torch.tensor([0, 1, 2, 2, 1, 0]),
    )
    eps = label_aware_epsilons(counts, 0.4, 0.1, "linear")[target].unsqueeze(1)
    soft = torch.nn.functional.one_hot(target, 3) * (1 - eps) + eps / 3
    expected = -(soft * logits.log_softmax(dim=1)).sum(dim=1).mean()
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="set one of them"):
        CrossEntropyLoss(cls_num_list=counts, label_smoothing=0.1, label_aware_smoothing=[0.3, 0.0])
