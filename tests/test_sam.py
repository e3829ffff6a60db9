"""Sharpness-aware minimisation: the two-step update against a hand computation, BatchNorm left
alone in the second pass, and a settings mistake refused (exact resume: tests/test_resume.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from common.errors import UserError
from train import train
from trainer.sam import SharpnessAware


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

    def backward(value: torch.Tensor, last: bool) -> None:
        value.backward()
        if last:  # the weights the second gradient is taken at: w + e, restored afterwards
            seen.append([p.detach().clone() for p in model.parameters()])

    sam.gradient(((model(x) - y) ** 2).mean(), lambda: ((model(x) - y) ** 2).mean(), backward)
    for p, q, d in zip(seen[0], w0, e, strict=True):
        assert torch.allclose(p, q + d, atol=1e-7)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), w0, strict=True))  # back, bit for bit
    optimizer.step()
    for p, q in zip(model.parameters(), expected, strict=True):
        assert torch.allclose(p, q, atol=1e-6)


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
