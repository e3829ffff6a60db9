"""One training step of the loop: a batch onto the device (mixed by Mixup), the forward pass under
autocast, the loss, the backward pass (or SAM's two, ``trainer.sam``) and, at the end of a group
of accumulated batches, one optimizer update: unscale and clip, step (fp16 loss scaling skips
overflowing steps), the schedule's per-update step and the EMA. Hooks see the gradients before
the step and the weights after it (``trainer.hooks``).

``TrainStep`` owns what an update changes (the model, its EMA, optimizer, schedule and scaler);
the loop (``trainer.trainer``) owns the epochs around it.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from trainer.checkpoint import Stateful
from trainer.config import TrainerConfig
from trainer.device import autocast_dtype, no_sync, place_model, wrap_model
from trainer.ema import create_ema, update_ema
from trainer.hooks.base import Hooks
from trainer.optimization import create_optimization
from trainer.parts import RunContext, TrainingParts
from trainer.progress import Progress
from trainer.sam import Passes

log = logging.getLogger("trainer.trainer")


class TrainStep:
    """Trains ``parts.model`` one batch at a time on ``device``; counts updates in ``progress``."""

    def __init__(
        self, config: TrainerConfig, parts: TrainingParts, run: RunContext, device: torch.device, hooks: Hooks
    ) -> None:
        self.config, self.device, self.dist, self.hooks = config, device, run.dist, hooks
        self.mixup_fn, self.sam, self.progress = parts.mixup_fn, parts.sam, Progress()
        self.raw_model = place_model(parts.model, config, device, run.dist)
        self.criterion = parts.criterion.to(device)
        self.optimizer, self.lr_scheduler = create_optimization(
            self.raw_model, parts, config, run.dist.is_main
        )
        self.amp_dtype = autocast_dtype(config, device)
        # Loss scaling only for float16 on CUDA; disabled, the scaler passes everything through.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.model_ema = create_ema(self.raw_model, config.ema, say=run.dist.is_main)
        self.model = wrap_model(self.raw_model, config, device, run.dist)
        self.said_unmixed = False  # a batch of one image met Mixup

    @property
    def stateful(self) -> Stateful:
        return Stateful(self.raw_model, self.optimizer, self.lr_scheduler, self.scaler, self.model_ema)

    def current_lr(self) -> float:
        """The largest group's lr: the base lr (with layer-wise decay, the head's)."""
        return max(group["lr"] for group in self.optimizer.param_groups)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            return self.model(images)

    def __call__(
        self, images: torch.Tensor, target: torch.Tensor, group: int = 1, update: bool = True
    ) -> tuple[torch.Tensor, int]:
        """One batch of a group of ``group`` accumulated batches: its loss / ``group`` backward (so
        the group's gradient is their mean), then with ``update`` one optimizer update. Returns
        the batch's loss (detached, on the device) and size."""
        images, target = self.batch(images, target)
        # forward, loss (our losses compute in float32 whatever the autocast dtype)
        logits = self.forward(images)
        loss = self.criterion(logits, target)
        # backward (under DDP, gradients are all-reduced on a group's last batch only)
        if self.sam is not None:  # sharpness-aware: the gradient taken at w + e instead (trainer/sam.py)
            self.sam.gradient(images, target, logits, loss, self.passes(group, update))
        else:
            self.backward(loss / group, update)
        if update:
            self.update()
        return loss.detach(), images.shape[0]

    def batch(self, images: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch on the device, in the model's memory layout, mixed when Mixup is on."""
        images = images.to(self.device, non_blocking=True)
        target = target.to(self.device, non_blocking=True)
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.mixup_fn is not None and images.shape[0] > 1:
            if images.shape[0] % 2:  # a skipped unreadable image left an odd batch; Mixup pairs images
                images, target = images[:-1], target[:-1]
            images, target = self.mixup_fn(images, target)  # target: (N,) -> soft (N, C)
        elif self.mixup_fn is not None and not self.said_unmixed:  # nothing to pair one image with
            self.said_unmixed = True
            log.warning(
                "A training batch held one readable image (the others were unreadable): Mixup pairs "
                "images, so such a batch trains unmixed, on its hard label (said once)."
            )
        return images, target

    def backward(self, value: torch.Tensor, update: bool) -> None:
        with no_sync(self.model, enabled=not update):
            self.scaler.scale(value).backward()

    def passes(self, group: int, update: bool) -> Passes:
        """What SAM borrows of the loop for one batch: its passes, scaled as the loop scales."""

        def backward(value: torch.Tensor, last: bool = True) -> None:
            self.backward(value / group if last else value, update)

        def scaled(value: torch.Tensor) -> torch.Tensor:
            return self.scaler.scale(value / group)

        return Passes(self.forward, self.criterion, backward, scaled, self.dist, self.hooks.on_gradients)

    def update(self) -> None:
        """One optimizer update from the gradients the group's batches left."""
        cfg = self.config
        self.hooks.on_gradients()  # e.g. a frozen backbone's gradients dropped
        # unscale and clip: clipping must see the true gradients, not the scaled ones
        if cfg.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.raw_model.parameters(), cfg.clip_grad)
        # step (the scaler skips steps whose gradients overflowed in float16)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.hooks.on_update()  # e.g. MaxNorm's cap
        self.optimizer.zero_grad(set_to_none=True)
        self.progress.num_updates += 1
        if self.lr_scheduler is not None:
            self.lr_scheduler.step_update(num_updates=self.progress.num_updates)
        if self.model_ema is not None:  # every trainer.ema.every_steps updates
            update_ema(self.model_ema, self.raw_model, self.progress.num_updates, cfg.ema.every_steps)
