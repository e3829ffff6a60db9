"""Sharpness-aware minimisation (Foret et al., ICLR 2021, "Sharpness-Aware Minimization for
Efficiently Improving Generalization") around whichever optimizer is configured.

Each update takes the gradient g at the weights w, moves to w + e with e = rho g / ||g|| (the
steepest ascent within a ball of radius rho), takes the gradient there, returns to w and lets
the optimizer step with that second gradient: it seeks weights whose neighbourhood has low loss.
On CIFAR-10-LT at imbalance 100 it lifts LDAM-DRW from 77.0 to 81.9 (Rangwani et al., NeurIPS
2022); POSTER++ trains RAF-DB with it. It costs a second forward and backward per batch.

With accumulation each batch of a group is perturbed by its own gradient (the paper's
m-sharpness, m the batch) and the group's second gradients are summed as usual; the gradients of
the group's earlier batches are set aside meanwhile. Under fp16 loss scaling the direction
g / ||g|| is the same for scaled gradients; a first gradient that overflowed is not followed
(e = 0). BatchNorm's running statistics are left alone during the second pass, so they average
the real weights' batches only. The weights are restored by copy, not by subtraction, so w
comes back bit for bit. SAM holds no state between updates: a resume needs nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


class SharpnessAware:
    """The ascent to w + e and the way back, for the parameters of ``model`` that train."""

    def __init__(self, model: nn.Module, rho: float) -> None:
        self.model, self.rho = model, rho
        self.saved: list[tuple[nn.Parameter, torch.Tensor]] = []

    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad and p.grad is not None]

    @torch.no_grad()
    def ascend(self) -> None:
        """w <- w + rho g / ||g|| (g: the gradients now held; the global L2 norm over all of them)."""
        params = self.parameters()
        self.saved = [(p, p.detach().clone()) for p in params]
        if not params:
            return
        norms = torch.stack([torch.linalg.vector_norm(p.grad.float()) for p in params])
        norm = torch.linalg.vector_norm(norms)
        # an overflowed (fp16) or empty gradient: stay at w; decided on the device, no sync
        scale = torch.where(torch.isfinite(norm) & (norm > 0), self.rho / norm, torch.zeros_like(norm))
        for p in params:
            p.add_(torch.nan_to_num(p.grad.float(), nan=0.0, posinf=0.0, neginf=0.0) * scale)

    @torch.no_grad()
    def restore(self) -> None:
        """Back to w, exactly."""
        for p, original in self.saved:
            p.copy_(original)
        self.saved = []

    def set_aside(self) -> list[torch.Tensor | None]:
        """The gradients accumulated so far (earlier batches of the group), cleared for the ascent."""
        grads = [p.grad for p in self.model.parameters()]
        for p in self.model.parameters():
            p.grad = None
        return grads

    def add_back(self, grads: list[torch.Tensor | None]) -> None:
        """The set-aside gradients added to the ones the second pass left."""
        for p, g in zip(self.model.parameters(), grads, strict=True):
            if g is None:
                continue
            if p.grad is None:
                p.grad = g
            else:
                p.grad.add_(g)

    @contextmanager
    def frozen_statistics(self) -> Iterator[None]:
        """BatchNorm layers keep their running statistics through the second forward pass."""
        norms = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in norms]
        for m in norms:
            if m.momentum is not None:
                m.momentum = 0.0
        try:
            yield
        finally:
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum

    def gradient(
        self,
        loss: torch.Tensor,
        loss_again: Callable[[], torch.Tensor],
        backward: Callable[[torch.Tensor, bool], None],
        before_ascent: Callable[[], None] | None = None,
    ) -> None:
        """Leave in the gradients the one taken at w + e (added to the group's earlier ones).

        ``loss`` is the batch's loss at w; ``loss_again`` computes it anew (at w + e, with
        BatchNorm's statistics kept); ``backward(value, last)`` runs the loop's backward, ``last``
        for the gradient the optimizer will use; ``before_ascent`` drops what must not move (a
        frozen backbone's gradients)."""
        earlier = self.set_aside()
        backward(loss, False)
        if before_ascent is not None:
            before_ascent()
        self.ascend()
        for p in self.model.parameters():
            p.grad = None
        with self.frozen_statistics():
            again = loss_again()
        backward(again, True)
        self.restore()
        self.add_back(earlier)
