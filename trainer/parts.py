"""What the Trainer is given: the parts of a run (``TrainingParts``, built by ``trainer.build``)
and where and as what it runs (``RunContext``, from the shell). Typed here, so that the builder,
the loop and the tools that drive the loop agree without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from timm.scheduler.scheduler import Scheduler
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from common.dist import SINGLE, Dist
from common.run_folder import RunFolder
from common.signals import StopSignals
from trainer.hooks.base import Hook
from trainer.loggers.base import Logger, RunInfo
from trainer.sam import SharpnessAware

OptimizerFactory = Callable[[nn.Module], Optimizer]
SchedulerFactory = Callable[..., tuple[Scheduler, int]]
MixupFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class TrainingParts:
    """The objects a run trains with, each built from its config group."""

    model: nn.Module
    criterion: nn.Module
    optimizer_factory: OptimizerFactory  # called with the model once it is on its device
    train_loader: DataLoader
    val_loader: DataLoader
    class_names: list[str]
    class_counts: list[int]  # training images per class
    scheduler_factory: SchedulerFactory | None = None
    mixup_fn: MixupFn | None = None
    hooks: Sequence[Hook] = ()  # the optional behaviours (trainer.hooks), called in this order
    sam: SharpnessAware | None = None  # sharpness-aware gradients instead of plain ones


@dataclass
class RunContext:
    """Where the run writes, as which process, and what it records."""

    folder: RunFolder
    seed: int
    dist: Dist = SINGLE
    stop: StopSignals | None = None  # None: signals keep their usual effect
    loggers: Sequence[Logger] = ()  # rank 0's logger backends
    info: RunInfo | None = None  # what the loggers know of the run
    config: dict[str, Any] = field(default_factory=dict)  # the run's config, as checkpoints record it
