"""Sharpness-aware minimisation: the two-step update against a hand computation (SAM's and
ImbSAM's), BatchNorm left alone in the second pass, and settings mistakes refused (exact resume:
tests/test_resume.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from common.errors import UserError
from train import train
from trainer.sam import Passes, SharpnessAware, split_loss, tail_classes


def passes(model: nn.Module, criterion, seen: list[list[torch.Tensor]]) -> Passes:
    """The loop's part, plainly: no autocast, no scaling, one process; the weights of the last pass kept."""

    def backward(value: torch.Tensor, last: bool) -> None:
        value.backward()
        if last:  # the weights the second gradient is taken at: w + e, restored afterwards
            seen.append([p.detach().clone() for p in model.parameters()])

    return Passes(model, criterion, backward, lambda value: value)


def test_sam_steps_with_the_gradient_taken_at_the_ascended_weights():
    torch.manual_seed(0)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    model = nn.Linear(3, 1)
    w0 = [p.detach().clone() for p in model.parameters()]
    lr, rho = 0.1, 0.05

    def loss_at(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return ((x @ weight.T + bias - y) ** 2).mean()

    # by hand: g at w, e = rho g / ||g||, g' at w + e, w <- w - lr g'
    w, b = (t.clone().requires_grad_() for t in w0)
    g = torch.autograd.grad(loss_at(w, b), (w, b))
    norm = torch.sqrt(sum((t**2).sum() for t in g))
    e = [rho * t / norm for t in g]
    w2, b2 = (t.detach() + d for t, d in zip(w0, e, strict=True))
    w2.requires_grad_(), b2.requires_grad_()
    g2 = torch.autograd.grad(loss_at(w2, b2), (w2, b2))
    expected = [t - lr * d for t, d in zip(w0, g2, strict=True)]

    # as the Trainer does it
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    sam = SharpnessAware(model, rho)
    seen: list[list[torch.Tensor]] = []
    mse = nn.MSELoss()
    output = model(x)
    sam.gradient(x, y, output, mse(output, y), passes(model, mse, seen))
    for p, q, d in zip(seen[0], w0, e, strict=True):
        assert torch.allclose(p, q + d, atol=1e-7)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), w0, strict=True))  # back, bit for bit
    optimizer.step()
    for p, q in zip(model.parameters(), expected, strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_imbsam_takes_the_head_gradient_at_w_and_the_tail_gradient_at_the_tail_ascent():
    torch.manual_seed(0)
    x, y = torch.randn(10, 3), torch.tensor([0, 0, 0, 1, 0, 2, 0, 0, 1, 0])
    model = nn.Linear(3, 3)
    tail = tail_classes([50, 10, 5], few_shot=20)
    assert tail.tolist() == [False, True, True]
    with pytest.raises(UserError, match="no class has fewer than trainer.few_shot=5 training images"):
        tail_classes([50, 10, 5], few_shot=5)
    w0 = [p.detach().clone() for p in model.parameters()]
    lr, rho = 0.1, 0.05
    ce = nn.CrossEntropyLoss()
    head_rows, tail_rows = y == 0, y != 0

    def part(weight: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return ce(x[rows] @ weight.T + bias, y[rows]) * rows.sum() / len(y)  # its share of the batch

    # by hand (Zhou et al. 2023): g_head at w + g_tail at w + e, e = rho g_tail(w) / ||g_tail(w)||
    w, b = (t.clone().requires_grad_() for t in w0)
    g_head = torch.autograd.grad(part(w, b, head_rows), (w, b))
    g_tail = torch.autograd.grad(part(w, b, tail_rows), (w, b))
    norm = torch.sqrt(sum((t**2).sum() for t in g_tail))
    w2, b2 = (t.detach() + rho * d / norm for t, d in zip(w0, g_tail, strict=True))
    w2.requires_grad_(), b2.requires_grad_()
    g_tail2 = torch.autograd.grad(part(w2, b2, tail_rows), (w2, b2))
    expected = [t - lr * (h + d) for t, h, d in zip(w0, g_head, g_tail2, strict=True)]
    with torch.no_grad():
        head_loss, tail_loss = split_loss(model(x), y, ce, tail)
        assert float(head_loss + tail_loss) == pytest.approx(float(ce(model(x), y)))  # the parts add up

    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    output = model(x)
    SharpnessAware(model, rho, tail).gradient(x, y, output, ce(output, y), passes(model, ce, []))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), w0, strict=True))
    optimizer.step()
    for p, q in zip(model.parameters(), expected, strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_a_batch_without_tail_samples_trains_as_without_sam():
    torch.manual_seed(1)
    x, y = torch.randn(6, 3), torch.zeros(6, dtype=torch.long)
    model = nn.Linear(3, 3)
    ce = nn.CrossEntropyLoss()
    plain = torch.autograd.grad(ce(model(x), y), list(model.parameters()))
    output = model(x)
    SharpnessAware(model, 0.05, tail_classes([50, 10, 5], 20)).gradient(
        x, y, output, ce(output, y), passes(model, ce, [])
    )
    for p, g in zip(model.parameters(), plain, strict=True):
        assert torch.allclose(p.grad, g, atol=1e-7)


def test_an_overflowed_gradient_is_not_followed_and_batchnorm_keeps_its_statistics():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    sam = SharpnessAware(model, 0.05)
    for p in model.parameters():
        p.grad = torch.full_like(p, float("inf"))  # an fp16 overflow
    before = [p.detach().clone() for p in model.parameters()]
    sam.ascend()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    sam.restore()
    mean = model[1].running_mean.clone()
    with sam.frozen_statistics():
        model.train()(torch.randn(4, 2) + 5)
    assert torch.equal(model[1].running_mean, mean) and model[1].momentum == 0.1


def test_a_run_trains_with_sam_and_a_negative_rho_is_refused(cfg_factory, image_tree, tmp_path):
    tree = ["dataset=imagefolder", f"dataset.root={image_tree}", "dataset.batch_size=4"]
    summary = train(
        cfg_factory(*tree, "optimizer.sam.rho=0.05", "trainer.ema.enabled=false"), tmp_path / "run"
    )
    assert math.isfinite(summary.final["val"].loss) and summary.final["val"].loss < 5
    with pytest.raises(UserError, match="optimizer.sam.rho=-1 must be a number >= 0"):
        train(cfg_factory("optimizer.sam.rho=-1"), tmp_path / "bad")
    with pytest.raises(UserError, match="optimizer.sam.classes='few' must be all"):
        train(cfg_factory("optimizer.sam.rho=0.05", "optimizer.sam.classes=few"), tmp_path / "bad")
