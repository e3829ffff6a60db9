"""The training loop: epochs of forward, loss, backward, clip, step, EMA; validation; checkpoints.

One ``Trainer`` holds everything a run changes. ``fit`` trains epochs ``start..epochs``
(counted from 1), validates the raw and the EMA model after each, has ``trainer.checkpoint`` keep
``last.pt`` and the ``best.pt`` of the monitored metric, and ``trainer.run_log.RunLogger`` record
the epoch on the console and in the logger backends. Optional behaviours (freezing, MaxNorm, DRW,
the error gallery, the collapse watch, early stopping) are hooks (``trainer.hooks``) called at
named moments. A checkpoint restores model, optimizer, scheduler, scaler, EMA, epoch and best
metric; every RNG is reseeded from (seed, epoch) at each epoch start, so a resumed run continues
as if never stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import closing
from typing import Any

import torch

from common.run_folder import LAST_SHOWN
from common.signals import Interrupted, StopSignals
from trainer.checkpoint import Checkpoint, Checkpointer, capture, load_checkpoint, restore
from trainer.config import TrainerConfig
from trainer.console import EpochProgress
from trainer.device import resolve_device
from trainer.distributed import agreed_signal, all_reduce_sum, barrier, gather_objects
from trainer.evaluation.metrics import Evaluation
from trainer.guard import NonFiniteGuard
from trainer.hooks.base import EpochEnd, Hooks
from trainer.parts import RunContext, TrainingParts
from trainer.progress import Progress
from trainer.results import FitSummary, TrainStats, best_tag, monitored_model, weights_key
from trainer.run_log import RunLogger, epoch_scalars
from trainer.seed import capture_rng, reseed_epoch, restore_rng
from trainer.step import TrainStep
from trainer.validation import Validator

log = logging.getLogger(__name__)


class Trainer:
    """Trains ``parts.model`` with ``parts.criterion``, validating on ``parts.val_loader``."""

    def __init__(self, config: TrainerConfig, parts: TrainingParts, run: RunContext) -> None:
        self.config, self.run, self.dist = config, run, run.dist
        self.stop = run.stop or StopSignals()  # not installed: signals keep their usual effect
        self.device = resolve_device(config.device, run.dist)
        self.train_loader = parts.train_loader
        self.class_names, self.class_counts = list(parts.class_names), list(parts.class_counts)
        self.hooks = Hooks(parts.hooks)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
        self.step = TrainStep(config, parts, run, self.device, self.hooks)
        self.model, self.model_ema = self.step.model, self.step.model_ema
        watch, shown = self.hooks.watch_validation, run.dist.is_main
        self.validate = Validator(
            parts.val_loader, self.class_counts, config, self.device, self.step.amp_dtype, shown, watch
        )
        names, counts, ema = self.class_names, self.class_counts, self.model_ema is not None
        self.reporter = RunLogger.of_run(run, config, names, counts, ema) if run.dist.is_main else None
        self.checkpointer = Checkpointer(run.folder)
        self.mid_epoch: dict[str, Any] | None = None  # where a mid-epoch checkpoint left the epoch
        self.best_results: dict[str, Evaluation] | None = None  # of the best epoch trained here

    @property
    def progress(self) -> Progress:
        return self.step.progress

    def train_one_epoch(self, epoch: int) -> TrainStats:
        """One pass over the training data; returns the mean training loss, speed and skips.

        After a mid-epoch checkpoint (``self.mid_epoch``) the batches already trained on are fetched
        again but not trained on, which replays the sampler's and the loader workers' random
        state; then the saved Python/NumPy/torch generator states are put back.
        """
        self.model.train()
        self.hooks.on_epoch_start(epoch, say=self.dist.is_main)
        cfg, steps, accumulate = self.config, len(self.train_loader), self.config.accumulate_steps
        mid, self.mid_epoch = self.mid_epoch or {}, None
        done, seen, start = mid.get("step", 0), mid.get("seen", 0), time.perf_counter()
        loss_sum = torch.full((), mid.get("loss_sum", 0.0), device=self.device)  # on device: no sync
        # fp16 loss scaling skips a few overflowing steps by design; without it none is normal
        limit, rho = 10 if self.step.scaler.is_enabled() else 0, self.step.sam.rho if self.step.sam else 0.0
        guard = NonFiniteGuard(self.device, limit, self.dist, sam_rho=rho)
        every_log = min(cfg.log_every_steps, max(1, steps // 5))  # a few times, even if short
        # the lr of each update, summed: train/lr is the epoch's mean (warm-up changes it every step)
        lr_sum = mid.get("lr_sum", mid.get("lr", 0.0) * done)
        bar = EpochProgress(
            self.train_loader, f"epoch {epoch}/{cfg.epochs}", cfg.progress and self.dist.is_main
        )
        for step, (images, target) in enumerate(bar, 1):
            if step <= done:  # replaying the part of the epoch trained before the checkpoint
                if step == done:
                    restore_rng(mid["rng"][self.dist.rank])
                continue
            lr_sum += self.step.current_lr()
            # accumulation: groups of K batches, the last one possibly shorter (its mean all the same)
            boundary = step % accumulate == 0 or step == steps
            group = accumulate if step <= steps - steps % accumulate else steps % accumulate
            loss, size = self.step(images, target, group, update=boundary)
            # log (non-finite losses are counted on the device and checked when we sync anyway)
            loss_sum += torch.where(guard.observe(loss, step), loss, 0.0) * size
            seen += size
            if step % every_log == 0 or step == steps:
                guard.check(epoch, self.step.current_lr(), self.progress.epoch)
                bar.show(step, steps, (loss_sum / max(seen, 1)).item(), self.step.current_lr(), seen)
            # a signal or a checkpoint waits for the group's update: its gradients are not saved
            signum = self.signal(sync=step % every_log == 0 or step == steps) if boundary else None
            every = cfg.checkpoint_every_steps
            if signum is not None or (every and step % every == 0 and step < steps):
                guard.check(epoch, self.step.current_lr(), self.progress.epoch)  # never checkpoint a NaN run
                self.save_mid_epoch(step, loss_sum, seen, lr_sum)
            if signum is not None:  # SIGTERM/SIGINT: checkpointed where we stand, now stop
                bar.close()
                raise Interrupted(signum, f"{LAST_SHOWN} holds epoch {epoch} up to step {step} of {steps}")
        bar.close()
        elapsed = time.perf_counter() - start
        skipped = len(getattr(self.train_loader, "skipped", ()))  # unreadable images skipped by the loader
        totals = all_reduce_sum(
            torch.stack([loss_sum, torch.tensor(float(seen), device=self.device)]), self.dist
        )
        mean_loss, images_per_s = (totals[0] / totals[1].clamp_min(1)).item(), totals[1].item() / elapsed
        return TrainStats(mean_loss, lr_sum / max(steps, 1), images_per_s, elapsed, skipped)

    def signal(self, sync: bool) -> int | None:
        """The stop signal to act on now: under DDP the ranks agree at sync points (one all-reduce)."""
        return agreed_signal(self.stop.requested, self.device, self.dist, sync)

    def save_mid_epoch(self, step: int, loss_sum: torch.Tensor, seen: int, lr_sum: float) -> None:
        """``last.pt`` in the middle of an epoch: the usual state plus where the epoch stands."""
        rng = gather_objects(capture_rng(), self.dist)  # one state per rank; every rank takes part
        if self.dist.is_main:
            where = {"step": step, "loss_sum": loss_sum.item(), "seen": seen, "lr_sum": lr_sum, "rng": rng}
            if self.reporter is not None:
                self.reporter.wait()  # the last epoch's record first: last.pt never runs ahead of it
            self.checkpointer.save_mid_epoch(self.state_dict(), where)

    def state_dict(self) -> Checkpoint:
        """The checkpoint: everything needed to resume, saved from the unwrapped model."""
        about = {"seed": self.run.seed, "class_names": self.class_names, "class_counts": self.class_counts}
        state = capture(
            self.step.stateful, self.progress, self.config.monitor, config=self.run.config, **about
        )
        state["stopped_early"] = self.hooks.stop_reason(self.progress)
        return state

    def evaluate_best(self, loader: Any) -> Evaluation:
        """best.pt's monitored weights (the model's, or the EMA's for ``val_ema/...``) on ``loader``;
        every rank reads best.pt (rank 0 wrote it before the end-of-training barrier)."""
        state = load_checkpoint(self.run.folder.best, key=self.run.folder.best.name)
        name = monitored_model(self.config.monitor)
        ema = name == "val_ema" and self.model_ema is not None
        (self.model_ema.module if ema else self.step.raw_model).load_state_dict(state[weights_key(name)])
        return self.validate.on(loader, self.model_ema.module if ema else self.model)

    def fit(self, resume_state: Checkpoint | None = None) -> FitSummary:
        """Train to ``config.epochs``, from scratch or from ``resume_state``; return the summary."""
        if resume_state is not None:
            cfg = self.config
            self.step.progress = restore(self.step.stateful, resume_state, cfg.monitor, cfg.epochs)
            self.mid_epoch = resume_state.get("partial")  # set when saved in the middle of an epoch
        if (schedule := self.step.lr_scheduler) is not None:
            schedule.step(self.progress.epoch)  # timm counts epochs from 0: lr for the next epoch
            schedule.step_update(self.progress.num_updates)
        if self.reporter is not None:
            self.reporter.open(resume_after=self.progress.epoch)
        summary = None
        try:
            summary = self.train_epochs()
        finally:  # the loggers are closed (flushed) also when a signal or an error stops the run
            if self.reporter is not None:
                self.reporter.close(summary)
        off = self.reporter.loggers.dropped if self.reporter is not None else {}
        return dataclasses.replace(summary, loggers_off=dict(off)) if off else summary

    def train_epochs(self) -> FitSummary:
        """The epochs after ``self.progress.epoch``, up to ``config.epochs`` or an early stop."""
        results: dict[str, Evaluation] = {}
        start, stopped = self.progress.epoch + 1, None
        # a signal now stops at the next step, with a checkpoint; the last writes are waited for
        with self.stop.deferred(), closing(self.checkpointer):
            for epoch in range(start, self.config.epochs + 1):
                stopped = self.hooks.stop_reason(self.progress)
                if stopped:  # also right after a resume: a run that had stopped does not train on
                    log.info("Early stopping: %s", stopped)
                    break
                results = self.run_epoch(epoch)
        barrier(self.dist)  # no rank leaves while rank 0 still writes
        p = self.progress
        final = results if p.epoch >= start else None
        names, counts, monitor = self.class_names, self.class_counts, self.config.monitor
        pictures = self.hooks.on_fit_end(p.best_epoch, self.dist.is_main)  # e.g. best.pt's gallery
        return FitSummary(
            final, self.best_results, p.best_metric, p.best_epoch, monitor, p.epoch, names, counts, stopped
        ).with_pictures(pictures)

    def run_epoch(self, epoch: int) -> dict[str, Evaluation]:
        """Train, validate, record and checkpoint one epoch; returns its validation results."""
        reseed_epoch(self.run.seed, epoch, self.dist.rank, self.train_loader.generator)
        train = self.train_one_epoch(epoch)
        results = {"val": self.validate(self.model, "val", epoch)}
        if self.model_ema is not None:
            results["val_ema"] = self.validate(self.model_ema.module, "val_ema", epoch)
        self.progress.epoch = epoch
        end = EpochEnd(epoch, train, results, self.dist.is_main)
        scalars = self.judge(end)
        self.hooks.on_validation_end(end)
        self.record_epoch(end, scalars)
        if self.step.lr_scheduler is not None:
            self.step.lr_scheduler.step(epoch)
        signum = self.signal(sync=True)  # one arrived during validation or the save
        if signum is not None and epoch < self.config.epochs:
            raise Interrupted(signum, f"{LAST_SHOWN} holds epoch {epoch}, complete")
        return results

    def judge(self, end: EpochEnd) -> dict[str, float]:
        """The epoch's scalars; whether it is the best so far (``end.improved``), on every rank alike
        (the metrics are synced)."""
        cfg, progress = self.config, self.progress
        scalars = epoch_scalars(end.train, end.results, self.class_names)
        min_delta = cfg.early_stopping.min_delta
        end.improved = progress.note_best(end.epoch, scalars[cfg.monitor], cfg.monitor_mode, min_delta)
        if end.improved:
            self.best_results = end.results
        if progress.best_metric is not None:
            scalars[best_tag(cfg.monitor)] = progress.best_metric  # the best so far, a curve
        return scalars

    def record_epoch(self, end: EpochEnd, scalars: dict[str, float]) -> None:
        """The epoch's record, checkpoints and the console line (rank 0)."""
        if self.reporter is None:
            return
        recorded = self.reporter.record(end, scalars)  # on a worker thread; last.pt waits for it
        self.checkpointer.save_epoch(self.state_dict(), end.improved, after=recorded)
        self.reporter.epoch_line(end, self.progress.best_metric if end.improved else None)
