"""The training loop: epochs of forward, loss, backward, clip, step, EMA; validation; checkpoints.

One ``Trainer`` holds everything a run changes. ``fit`` trains epochs ``start..epochs``
(counted from 1), validates the raw and the EMA model after each, has ``trainer.checkpoint`` keep
``last.pt`` and the ``best.pt`` of the monitored metric, and ``trainer.logging.RunLogger``
record the epoch on the console and in the logger backends it is given (``trainer.loggers``).
A checkpoint restores model,
optimizer, scheduler, scaler, EMA, epoch and best metric; every RNG is reseeded from (seed,
epoch) at each epoch start, so a resumed run continues as if never stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from timm.scheduler.scheduler import Scheduler
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from common.dist import SINGLE, Dist
from losses.base import ImbalancedLoss
from models.factory import classifier_names
from models.heads import cap_row_norms, relative_cap
from trainer.checkpoint import Checkpoint, Checkpointer, Stateful, capture, restore
from trainer.config import TrainerConfig
from trainer.console import EpochProgress, on_terminal
from trainer.device import autocast_dtype, no_sync, place_model, resolve_device, wrap_model
from trainer.distributed import agreed_signal, all_reduce_sum, barrier, gather_objects
from trainer.ema import create_ema, update_ema
from trainer.evaluation.gallery import Gallery
from trainer.evaluation.metrics import ClassificationMetrics, Evaluation, ShotThresholds, evaluate_model
from trainer.freeze import BackboneFreeze
from trainer.guard import NonFiniteGuard
from trainer.interrupt import Interrupted, StopSignals
from trainer.layer_decay import apply_layer_decay
from trainer.loggers.base import Logger, Loggers, RunInfo
from trainer.logging import RunLogger, epoch_scalars
from trainer.progress import FitSummary, Progress, early_stop_reason
from trainer.results import TrainStats, best_tag
from trainer.sam import Passes, SamSettings, SharpnessAware, tail_classes
from trainer.seed import capture_rng, reseed_epoch, restore_rng

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[nn.Module], Optimizer]
SchedulerFactory = Callable[..., tuple[Scheduler, int]]
MixupFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class Trainer:
    """Trains ``model`` with ``criterion`` on ``train_loader``, validating on ``val_loader``."""

    def __init__(
        self,
        config: TrainerConfig,
        model: nn.Module,
        criterion: nn.Module,
        optimizer_factory: OptimizerFactory,
        train_loader: DataLoader,
        val_loader: DataLoader,
        class_names: Sequence[str],
        class_counts: Sequence[int],
        run_dir: Path,
        seed: int,
        scheduler_factory: SchedulerFactory | None = None,
        mixup_fn: MixupFn | None = None,
        loggers: Sequence[Logger] = (),
        run_info: RunInfo | None = None,
        run_config: dict[str, Any] | None = None,
        dist: Dist = SINGLE,
        stop: StopSignals | None = None,
        freeze_epochs: int = 0,
        sam: SamSettings | None = None,
        max_norm: float | None = None,
        max_norm_relative: bool = False,
    ) -> None:
        self.config, self.dist = config, dist
        self.stop = stop or StopSignals()  # not installed: signals keep their usual effect
        self.device = resolve_device(config.device, dist)
        self.train_loader, self.val_loader = train_loader, val_loader
        self.class_names, self.class_counts = list(class_names), list(class_counts)
        self.seed = seed  # run_dir goes to the Checkpointer and the RunLogger
        self.mixup_fn, self.run_config = mixup_fn, run_config or {}
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels

        self.raw_model = place_model(model, config, self.device, dist)
        classifier = classifier_names(self.raw_model)
        self.freeze = BackboneFreeze(self.raw_model, classifier, freeze_epochs) if freeze_epochs else None
        self.classifier, self.max_norm = classifier, max_norm
        if max_norm is not None and max_norm_relative:  # from the classifier as it starts, resumed or not
            self.max_norm = relative_cap(self.raw_model, classifier, max_norm)
            if dist.is_main:
                log.info(
                    "MaxNorm: class rows capped at norm %.4g (model.max_norm=%g of the way from the smallest "
                    "starting row norm to the largest)",
                    self.max_norm,
                    max_norm,
                )
        self.criterion = criterion.to(self.device)
        self.optimizer = optimizer_factory(self.raw_model)
        self.lr_scheduler: Scheduler | None = None
        if scheduler_factory is not None:
            updates = -(-len(train_loader) // config.accumulate_steps)  # a short last group updates too
            self.lr_scheduler, _ = scheduler_factory(
                self.optimizer, num_epochs=config.epochs, updates_per_epoch=updates
            )
        apply_layer_decay(self.optimizer, scheduled=self.lr_scheduler is not None, say=dist.is_main)
        self.amp_dtype = autocast_dtype(config, self.device)
        # Loss scaling only for float16 on CUDA; disabled, the scaler passes everything through.
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.model_ema = create_ema(self.raw_model, config.ema, say=dist.is_main)
        self.model = wrap_model(self.raw_model, config, self.device, dist)
        sam = sam or SamSettings()
        tail = tail_classes(self.class_counts, config.few_shot) if sam.tail else None
        self.sam = SharpnessAware(self.raw_model, sam.rho, tail) if sam.rho > 0 else None
        shots = ShotThresholds(many=config.many_shot, few=config.few_shot)
        counts, tau = self.class_counts, config.posthoc_tau
        self.metrics = ClassificationMetrics(len(counts), self.device, counts, shots, posthoc_tau=tau)
        prefixes = ["val", "val_ema"] if self.model_ema is not None else ["val"]
        run_info = run_info or RunInfo(run_dir, self.class_names, prefixes, self.run_config)
        run_info = dataclasses.replace(run_info, prefixes=prefixes, class_counts=list(self.class_counts))
        # rank 0 alone writes
        self.reporter = (
            RunLogger(run_info, Loggers(loggers), config.epochs, config.monitor, config.monitor_mode, tau)
            if dist.is_main
            else None
        )
        self.progress = Progress()
        self.checkpointer = Checkpointer(run_dir)
        self.mid_epoch: dict[str, Any] | None = None  # where a mid-epoch checkpoint left the epoch
        self.best_results: dict[str, Evaluation] | None = None  # of the best epoch trained here
        monitored = "val_ema" if config.monitor.startswith("val_ema/") else "val"
        self.gallery = Gallery(config.gallery_every, config.epochs, monitored)
        self.pictures: dict[str, Image.Image] = {}  # this epoch's error gallery, for the loggers

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def train_step(
        self, images: torch.Tensor, target: torch.Tensor, group: int = 1, update: bool = True
    ) -> tuple[torch.Tensor, int]:
        """One batch of a group of ``group`` accumulated batches: its loss / ``group`` backward (so
        the group's gradient is their mean), then with ``update`` one optimizer update. Returns
        the batch's loss (detached, on the device) and size."""
        cfg = self.config
        images = images.to(self.device, non_blocking=True)
        target = target.to(self.device, non_blocking=True)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.mixup_fn is not None:
            if images.shape[0] % 2:  # a skipped unreadable image left an odd batch; Mixup pairs images
                images, target = images[:-1], target[:-1]
            images, target = self.mixup_fn(images, target)  # target: (N,) -> soft (N, C)
        # forward
        logits = self.forward(images)
        # loss (our losses compute in float32 whatever the autocast dtype)
        loss = self.criterion(logits, target)

        # backward (under DDP, gradients are all-reduced on a group's last batch only)
        def scaled(value: torch.Tensor) -> torch.Tensor:  # as the update's gradient is scaled
            return self.scaler.scale(value / group)

        def backward(value: torch.Tensor, last: bool = True) -> None:
            with no_sync(self.model, enabled=not update):
                (scaled(value) if last else self.scaler.scale(value)).backward()

        if self.sam is not None:  # sharpness-aware: the gradient taken at w + e instead (trainer/sam.py)
            drop = self.freeze.drop_gradients if self.freeze else None  # a frozen backbone does not ascend
            run = Passes(self.forward, self.criterion, backward, scaled, self.dist, drop)
            self.sam.gradient(images, target, logits, loss, run)
        else:
            backward(loss)
        if not update:
            return loss.detach(), images.shape[0]
        if self.freeze is not None:
            self.freeze.drop_gradients()  # the first epochs train the classifier alone
        # unscale and clip: clipping must see the true gradients, not the scaled ones
        if cfg.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.raw_model.parameters(), cfg.clip_grad)
        # step (the scaler skips steps whose gradients overflowed in float16)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.max_norm is not None:  # MaxNorm: every class's row back within the cap
            cap_row_norms(self.raw_model, self.classifier, self.max_norm)
        self.optimizer.zero_grad(set_to_none=True)
        self.progress.num_updates += 1
        if self.lr_scheduler is not None:
            self.lr_scheduler.step_update(num_updates=self.progress.num_updates)
        if self.model_ema is not None:  # every trainer.ema.every_steps updates
            update_ema(self.model_ema, self.raw_model, self.progress.num_updates, cfg.ema.every_steps)
        return loss.detach(), images.shape[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.model(images)

    def train_one_epoch(self, epoch: int) -> TrainStats:
        """One pass over the training data; returns the mean training loss, speed and skips.

        After a mid-epoch checkpoint (``self.mid_epoch``) the batches already trained on are fetched
        again but not trained on, which replays the sampler's and the loader workers' random
        state; then the saved Python/NumPy/torch generator states are put back.
        """
        self.model.train()
        if self.freeze is not None:
            self.freeze.start_epoch(epoch, say=self.dist.is_main)
        cfg = self.config
        mid, self.mid_epoch = self.mid_epoch or {}, None
        done = mid.get("step", 0)
        loss_sum = torch.full((), mid.get("loss_sum", 0.0), device=self.device)  # on device: no sync
        # fp16 loss scaling skips a few overflowing steps by design; without it none is normal
        guard = NonFiniteGuard(self.device, limit=10 if self.scaler.is_enabled() else 0, dist=self.dist)
        seen, start = mid.get("seen", 0), time.perf_counter()
        steps, accumulate = len(self.train_loader), cfg.accumulate_steps
        every_log = min(cfg.log_every_steps, max(1, steps // 5))  # a few times, even if short
        # the lr of each update, summed: train/lr is the epoch's mean (warm-up changes it every step)
        lr_sum = mid.get("lr_sum", mid.get("lr", 0.0) * done)
        shown = cfg.progress and self.dist.is_main
        bar = EpochProgress(self.train_loader, f"epoch {epoch}/{cfg.epochs}", shown)
        for step, (images, target) in enumerate(bar, 1):
            if step <= done:  # replaying the part of the epoch trained before the checkpoint
                if step == done:
                    restore_rng(mid["rng"][self.dist.rank])
                continue
            lr_sum += self.current_lr()
            # accumulation: groups of K batches, the last one possibly shorter (its mean all the same)
            boundary = step % accumulate == 0 or step == steps
            group = accumulate if step <= steps - steps % accumulate else steps % accumulate
            loss, batch = self.train_step(images, target, group, update=boundary)
            # log (non-finite losses are counted on the device and checked when we sync anyway)
            finite = guard.observe(loss, step)
            loss_sum += torch.where(finite, loss, 0.0) * batch
            seen += batch
            if step % every_log == 0 or step == steps:
                guard.check(epoch, self.current_lr(), self.progress.epoch)
                # the epoch's running mean loss
                bar.show(step, steps, (loss_sum / max(seen, 1)).item(), self.current_lr(), seen)
            last_step = step == steps
            # a signal or a checkpoint waits for the group's update: its gradients are not saved
            signum = self.signal(sync=step % every_log == 0 or last_step) if boundary else None
            if signum is not None:  # SIGTERM/SIGINT: checkpoint where we stand, then stop
                guard.check(epoch, self.current_lr(), self.progress.epoch)
                self.save_mid_epoch(step, loss_sum, seen, lr_sum)
                bar.close()
                done_of = f"epoch {epoch} up to step {step} of {steps}"
                raise Interrupted(signum, f"checkpoints/last.pt holds {done_of}")
            every = cfg.checkpoint_every_steps
            if every and step % every == 0 and step < steps:
                guard.check(epoch, self.current_lr(), self.progress.epoch)  # never checkpoint a NaN run
                self.save_mid_epoch(step, loss_sum, seen, lr_sum)
        bar.close()
        elapsed = time.perf_counter() - start
        skipped = len(getattr(self.train_loader, "skipped", ()))  # unreadable images skipped by the loader
        totals = all_reduce_sum(
            torch.stack([loss_sum, torch.tensor(float(seen), device=self.device)]), self.dist
        )
        return TrainStats(
            loss=(totals[0] / totals[1].clamp_min(1)).item(),
            lr=lr_sum / max(steps, 1),
            images_per_s=totals[1].item() / elapsed,
            time=elapsed,
            skipped=skipped,
        )

    def signal(self, sync: bool) -> int | None:
        """The stop signal to act on now: under DDP the ranks agree at sync points (one all-reduce)."""
        return agreed_signal(self.stop.requested, self.device, self.dist, sync)

    def save_mid_epoch(self, step: int, loss_sum: torch.Tensor, seen: int, lr_sum: float) -> None:
        """``last.pt`` in the middle of an epoch: the usual state plus where the epoch stands."""
        rng = gather_objects(capture_rng(), self.dist)  # one state per rank; every rank takes part
        if not self.dist.is_main:
            return
        where = {"step": step, "loss_sum": loss_sum.item(), "seen": seen, "lr_sum": lr_sum, "rng": rng}
        self.checkpointer.save_mid_epoch(self.state_dict(), where)

    @property
    def stateful(self) -> Stateful:
        return Stateful(self.raw_model, self.optimizer, self.lr_scheduler, self.scaler, self.model_ema)

    def state_dict(self) -> Checkpoint:
        """The checkpoint: everything needed to resume, saved from the unwrapped model."""
        cfg = self.config
        about = {"seed": self.seed, "class_names": self.class_names, "class_counts": self.class_counts}
        state = capture(self.stateful, self.progress, cfg.monitor, config=self.run_config, **about)
        state["stopped_early"] = early_stop_reason(self.progress, cfg.early_stopping, cfg.monitor, cfg.epochs)
        return state

    def current_lr(self) -> float:
        """The largest group's lr: the base lr (with layer-wise decay, the head's)."""
        return max(group["lr"] for group in self.optimizer.param_groups)

    def evaluate(self, model: nn.Module, name: str, epoch: int) -> Evaluation:
        """Loss (plain cross-entropy) and metrics of ``model`` on the whole validation set; at a
        gallery epoch, the error gallery of the monitored model too (``self.pictures``)."""
        cfg = self.config
        # a progress bar named "val", "val_ema", on a terminal
        bar = name if cfg.progress and self.dist.is_main and on_terminal() else None
        dataset = self.val_loader.loader.dataset
        watch = self.gallery.watch(name, epoch, len(dataset), self.device)
        result = evaluate_model(
            model, self.val_loader, self.metrics, self.device, self.amp_dtype, cfg.channels_last, bar, watch
        )
        if watch is not None:
            synced = watch.synced()  # every rank: the predictions are summed across them
            if self.dist.is_main:
                title = Gallery.title(name, epoch)
                self.pictures[name] = Gallery.picture(synced, dataset.samples, self.class_names, title)
        return result

    def fit(self, resume_state: Checkpoint | None = None) -> FitSummary:
        """Train to ``config.epochs``, from scratch or from ``resume_state``; return the summary."""
        if resume_state is not None:
            self.progress = restore(self.stateful, resume_state, self.config.monitor, self.config.epochs)
            self.mid_epoch = resume_state.get("partial")  # set when saved in the middle of an epoch
        if self.lr_scheduler is not None:
            self.lr_scheduler.step(self.progress.epoch)  # timm counts epochs from 0: lr for the next epoch
            self.lr_scheduler.step_update(self.progress.num_updates)
        if self.reporter is not None:
            self.reporter.open(resume_after=self.progress.epoch)
        summary = None
        try:
            summary = self.train_epochs()
            return summary
        finally:  # the loggers are closed (flushed) also when a signal or an error stops the run
            if self.reporter is not None:
                self.reporter.close(summary)

    def train_epochs(self) -> FitSummary:
        """The epochs after ``self.progress.epoch``, up to ``config.epochs`` or an early stop."""
        results: dict[str, Evaluation] = {}
        start = self.progress.epoch + 1
        stopped, cfg = None, self.config
        # a signal now stops at the next step, with a checkpoint; the last writes are waited for
        with self.stop.deferred(), closing(self.checkpointer):
            for epoch in range(start, cfg.epochs + 1):
                stopped = early_stop_reason(self.progress, cfg.early_stopping, cfg.monitor, cfg.epochs)
                if stopped:  # also right after a resume: a run that had stopped does not train on
                    log.info("Early stopping: %s", stopped)
                    break
                results = self.run_epoch(epoch)
        barrier(self.dist)  # no rank leaves while rank 0 still writes
        return FitSummary(
            final=results if self.progress.epoch >= start else None,
            best=self.best_results,
            best_metric=self.progress.best_metric,
            best_epoch=self.progress.best_epoch,
            monitor=self.config.monitor,
            epoch=self.progress.epoch,
            stopped_early=stopped,
            class_names=self.class_names,
            class_counts=self.class_counts,
        )

    def run_epoch(self, epoch: int) -> dict[str, Evaluation]:
        """Train, validate, record and checkpoint one epoch; returns its validation results."""
        reseed_epoch(self.seed, epoch, self.dist.rank, self.train_loader.generator)
        if isinstance(self.criterion, ImbalancedLoss):  # the loss's hook: DRW switches on here
            change = self.criterion.set_epoch(epoch)
            if change and self.dist.is_main:
                log.info("%s", change)
        train = self.train_one_epoch(epoch)
        results = {"val": self.evaluate(self.model, "val", epoch)}
        if self.model_ema is not None:
            results["val_ema"] = self.evaluate(self.model_ema.module, "val_ema", epoch)
        self.progress.epoch = epoch
        self.record_epoch(epoch, train, results)
        if self.lr_scheduler is not None:
            self.lr_scheduler.step(epoch)
        signum = self.signal(sync=True)  # one arrived during validation or the save
        if signum is not None and epoch < self.config.epochs:
            raise Interrupted(signum, f"checkpoints/last.pt holds epoch {epoch}, complete")
        return results

    def record_epoch(self, epoch: int, train: TrainStats, results: dict[str, Evaluation]) -> None:
        """Best metric, the epoch's record (rank 0), checkpoints and the console line."""
        progress = self.progress
        scalars = epoch_scalars(train, results, self.class_names)
        # every rank computes the same synced metrics, so all agree on the best
        cfg = self.config
        improved = progress.note_best(
            epoch, scalars[cfg.monitor], cfg.monitor_mode, cfg.early_stopping.min_delta
        )
        if improved:
            self.best_results = results
        if progress.best_metric is not None:
            scalars[best_tag(cfg.monitor)] = progress.best_metric  # the best so far, a curve
        if self.reporter is None:
            return
        advice = getattr(self.criterion, "collapse_advice", None)
        pictures, self.pictures = self.pictures, {}
        self.reporter.record(epoch, scalars, results, train.time, advice, pictures)
        self.checkpointer.save_epoch(self.state_dict(), improved)
        new_best = progress.best_metric if improved else None
        self.reporter.epoch_line(epoch, train, results, new_best)
