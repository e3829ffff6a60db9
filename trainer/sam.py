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

ImbSAM (Zhou et al., ICCV 2023, "ImbSAM: A Closer Look at Sharpness-Aware Minimization in
Class-Imbalanced Recognition"), ``optimizer.sam.classes=tail``: the batch's loss splits into the
part of its head-class samples and the part of its tail-class ones (classes with fewer than
``trainer.few_shot`` training images, the paper's eta of 20), each the loss of its samples times
their share of the batch. The head part's gradient is taken at w, the tail part's at
w + e with e from the tail part's own gradient: the flat minimum is sought for the tail classes,
which overfit, and the head classes train as without SAM. Under Mixup a sample belongs to the
class with the larger share of its target. The head part's gradient is taken with
``torch.autograd.grad``, outside DistributedDataParallel's hooks, and averaged over the ranks
here, so that one forward pass meets one reducing backward; every rank runs the same passes
whatever its batch holds (an empty part has a zero loss that still reaches every weight).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from common.dist import SINGLE, Dist
from common.errors import UserError
from trainer.distributed import all_reduce_sum

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SamSettings:
    """``optimizer.sam``: the ascent's radius (0: off) and whether it perturbs for the tail classes only."""

    rho: float = 0.0
    tail: bool = False


@dataclass(frozen=True)
class Passes:
    """What the loop lends SAM for one batch: ``forward(images)`` (the model under autocast),
    ``criterion``, ``backward(value, last)`` (the loop's backward; ``last`` for the gradient the
    optimizer will use), ``scaled(value)`` (a loss as that last backward scales it), the process
    group and ``before_ascent`` (drops what must not move)."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    criterion: Loss
    backward: Callable[[torch.Tensor, bool], None]
    scaled: Callable[[torch.Tensor], torch.Tensor]
    dist: Dist = SINGLE
    before_ascent: Callable[[], None] | None = None


def tail_classes(class_counts: Sequence[int], few_shot: int) -> torch.Tensor:
    """ImbSAM's tail: the classes with fewer than ``few_shot`` training images, as a mask (C,)."""
    if min(class_counts) >= few_shot:
        raise UserError(
            f"optimizer.sam.classes=tail: no class has fewer than trainer.few_shot={few_shot} training "
            f"images (the smallest has {min(class_counts)}), so ImbSAM would perturb nothing; raise "
            f"trainer.few_shot to choose the tail, or use optimizer.sam.classes=all."
        )
    return torch.tensor([n < few_shot for n in class_counts], dtype=torch.bool)


def split_loss(
    logits: torch.Tensor, target: torch.Tensor, criterion: Loss, tail: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(head part, tail part) of the batch's loss: each the loss of its samples times their share
    of the batch; an empty part is 0 times the logits, so that its backward reaches every weight."""
    label = target if target.ndim == 1 else target.argmax(1)
    in_tail = tail.to(label.device)[label]
    parts = []
    for mask in (~in_tail, in_tail):
        n = int(mask.sum())
        parts.append(criterion(logits[mask], target[mask]) * (n / len(label)) if n else 0.0 * logits.sum())
    return parts[0], parts[1]


class SharpnessAware:
    """The ascent to w + e and the way back, for the parameters of ``model`` that train; with
    ``tail`` (a class mask) ImbSAM's, for the tail classes' part of the loss only."""

    def __init__(self, model: nn.Module, rho: float, tail: torch.Tensor | None = None) -> None:
        self.model, self.rho, self.tail = model, rho, tail
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

    def gradient(self, images: Tensor, target: Tensor, logits: Tensor, loss: Tensor, run: Passes) -> None:
        """Leave in the gradients the one taken at w + e (added to the group's earlier ones);
        ImbSAM's: the head part's gradient at w plus the tail part's at w + e.

        ``logits`` and ``loss`` are the batch's at w; the pass at w + e keeps BatchNorm's statistics."""
        earlier = self.set_aside()
        head: list[torch.Tensor | None] = []
        if self.tail is not None:
            head_loss, loss = split_loss(logits, target, run.criterion, self.tail)
            head = self.gradients_of(run.scaled(head_loss), run.dist)
        run.backward(loss, False)
        if run.before_ascent is not None:
            run.before_ascent()
        self.ascend()
        for p in self.model.parameters():
            p.grad = None
        with self.frozen_statistics():
            logits = run.forward(images)
            if self.tail is None:
                again = run.criterion(logits, target)
            else:
                again = split_loss(logits, target, run.criterion, self.tail)[1]
        run.backward(again, True)
        self.restore()
        if head:
            self.add_back(head)
        self.add_back(earlier)

    def gradients_of(self, value: torch.Tensor, dist: Dist) -> list[torch.Tensor | None]:
        """The gradient of ``value`` for every parameter (None where none trains), outside
        DistributedDataParallel's hooks, averaged over the ranks."""
        params = list(self.model.parameters())
        trained = [p for p in params if p.requires_grad]
        grads = torch.autograd.grad(value, trained, retain_graph=True, allow_unused=True)
        filled = [torch.zeros_like(p) if g is None else g for p, g in zip(trained, grads, strict=True)]
        if dist.enabled and filled:  # one all-reduce for them all, not one per tensor
            flat = all_reduce_sum(torch.cat([g.reshape(-1) for g in filled]), dist).div_(dist.world_size)
            for grad, part in zip(filled, flat.split([g.numel() for g in filled]), strict=True):
                grad.copy_(part.view_as(grad))
        by_param = dict(zip(map(id, trained), filled, strict=True))
        return [by_param.get(id(p)) for p in params]
