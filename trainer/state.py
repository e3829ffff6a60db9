"""A run's state and its checkpointing: what is saved, restored and compared.

``Progress`` is what changes as a run goes (epoch, optimizer updates, best metric). ``capture``
and ``restore`` turn the stateful objects of training (model, optimizer, schedule, GradScaler,
EMA) and the progress into one ``Checkpoint`` and back. ``Checkpointer`` writes ``last.pt``
after each epoch (and mid-epoch), and ``best.pt`` from the same state when the monitored metric
improved, as timm's CheckpointSaver does.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timm.scheduler.scheduler import Scheduler
from timm.utils import ModelEmaV3
from torch import nn
from torch.optim import Optimizer

from trainer.checkpoint import CHECKPOINT_VERSION, Checkpoint, link_checkpoint, save_checkpoint
from trainer.config import EarlyStoppingConfig, EMAConfig
from trainer.evaluation.metrics import Evaluation

log = logging.getLogger("trainer.trainer")


@dataclass(frozen=True)
class FitSummary:
    """What ``Trainer.fit`` returns: the best monitored value and the last epoch's metrics."""

    final: dict[str, Evaluation] | None  # the last epoch's results per prefix (val, val_ema)
    best: dict[str, Evaluation] | None  # the best epoch's, when this process trained it
    best_metric: float | None
    best_epoch: int | None
    monitor: str
    epoch: int  # the last completed epoch
    class_names: list[str]
    class_counts: list[int]
    stopped_early: str | None = None  # why training stopped before trainer.epochs, if it did


def is_better(value: float, best: float | None, mode: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if mode == "max" else value < best


def schedule_changes(saved: dict[str, Any], planned: dict[str, Any]) -> str:
    """The settings in which a checkpoint's scheduler differs from the one built now, or "".

    timm's schedulers keep their settings (length in updates, warm-up, minimum, base lrs) in
    their state, so loading an old state would silently restore the old plan.
    """
    keys = sorted(k for k in saved.keys() | planned.keys() if saved.get(k) != planned.get(k))
    return ", ".join(f"{k} {saved.get(k)} -> {planned.get(k)}" for k in keys)


@dataclass
class Progress:
    """How far a run has come: completed epochs, optimizer updates, the best monitored value."""

    epoch: int = 0
    num_updates: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    stale_epochs: int = 0  # epochs since the monitored value last beat its best by more than min_delta

    def note_best(self, epoch: int, value: float, mode: str, min_delta: float = 0.0) -> bool:
        """Whether epoch ``epoch``'s monitored ``value`` is a new best (then kept); counts the
        epochs without an improvement larger than ``min_delta`` (for early stopping)."""
        best = self.best_metric
        margin = min_delta if mode == "max" else -min_delta
        significant = best is None or math.isnan(best) or is_better(value, best + margin, mode)
        self.stale_epochs = 0 if significant else self.stale_epochs + 1
        improved = is_better(value, best, mode)
        if improved:
            self.best_metric, self.best_epoch = value, epoch
        return improved


@dataclass
class Stateful:
    """The objects of training whose state a checkpoint holds (the unwrapped model)."""

    model: nn.Module
    optimizer: Optimizer
    lr_scheduler: Scheduler | None
    scaler: torch.amp.GradScaler
    model_ema: ModelEmaV3 | None


def capture(parts: Stateful, progress: Progress, monitor: str, **about: Any) -> Checkpoint:
    """The checkpoint of ``parts`` and ``progress``; ``about``: seed, class names and counts, config."""
    return {
        "version": CHECKPOINT_VERSION,
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.lr_scheduler.state_dict() if parts.lr_scheduler is not None else None,
        "scaler": parts.scaler.state_dict() if parts.scaler.is_enabled() else None,
        "ema": parts.model_ema.module.state_dict() if parts.model_ema is not None else None,
        "epoch": progress.epoch,
        "num_updates": progress.num_updates,
        "best_metric": progress.best_metric,
        "best_epoch": progress.best_epoch,
        "stale_epochs": progress.stale_epochs,
        "monitor": monitor,
        "seed": about["seed"],
        "class_names": about["class_names"],
        "class_counts": about["class_counts"],
        "config": about["config"],
    }


def restore(parts: Stateful, state: Checkpoint, monitor: str, epochs: int) -> Progress:
    """Load ``state`` into ``parts``; the progress it records. The schedule of the current
    settings wins over a different saved one (said in the log); a changed monitor restarts the best."""
    parts.model.load_state_dict(state["model"])
    parts.optimizer.load_state_dict(state["optimizer"])
    if parts.lr_scheduler is not None and state["scheduler"] is not None:
        changed = schedule_changes(state["scheduler"], parts.lr_scheduler.state_dict())
        if changed:  # never train on the old plan silently: the new settings' schedule rules
            log.warning(
                "The learning-rate schedule differs from the checkpoint's (%s): continuing on the "
                "schedule planned for the current settings (trainer.epochs=%d), from update %d.",
                changed,
                epochs,
                state["num_updates"],
            )
        else:
            parts.lr_scheduler.load_state_dict(state["scheduler"])
    if parts.scaler.is_enabled() and state["scaler"] is not None:
        parts.scaler.load_state_dict(state["scaler"])
    if parts.model_ema is not None:
        parts.model_ema.module.load_state_dict(state["ema"] if state["ema"] is not None else state["model"])
    progress = Progress(
        state["epoch"],
        state["num_updates"],
        state["best_metric"],
        state["best_epoch"],
        state.get("stale_epochs", 0),
    )
    if state["monitor"] not in (None, monitor):
        log.info("monitor changed from %s to %s: best metric starts afresh", state["monitor"], monitor)
        progress.best_metric, progress.best_epoch, progress.stale_epochs = None, None, 0
    best = "none yet" if progress.best_metric is None else f"{progress.best_metric:.4f}"
    log.info("Resuming after epoch %d (best %s = %s)", progress.epoch, monitor, best)
    return progress


def apply_layer_decay(optimizer: Optimizer, scheduled: bool, say: bool) -> None:
    """timm's layer-wise lr decay gives each parameter group an ``lr_scale``, which timm's
    schedulers apply at every step; without a schedule it is applied here, once. ``say`` logs
    the range of the scales."""
    scales = [group.get("lr_scale", 1.0) for group in optimizer.param_groups]
    if min(scales) == max(scales) == 1.0:
        return
    if not scheduled:
        for group, scale in zip(optimizer.param_groups, scales, strict=True):
            group["lr"] *= scale
    if say:
        log.info(
            "Layer-wise lr decay: %d parameter groups, lr x%.3g for the first layers to x%.3g for the head",
            len(scales),
            min(scales),
            max(scales),
        )


def early_stop_reason(progress: Progress, rule: EarlyStoppingConfig, monitor: str, epochs: int) -> str | None:
    """Why the run stops before ``epochs``, or None to go on. It reads only the progress a
    checkpoint keeps, so a resumed run that had stopped does not train on (unless the rule changed)."""
    if rule.patience is None or progress.stale_epochs < rule.patience or progress.epoch >= epochs:
        return None
    return (
        f"after epoch {progress.epoch}, {monitor} has not improved by more than {rule.min_delta:g} for "
        f"{progress.stale_epochs} epochs (trainer.early_stopping.patience={rule.patience}); best "
        f"{progress.best_metric:.4f} at epoch {progress.best_epoch}, kept in best.pt"
    )


def create_ema(model: nn.Module, config: EMAConfig, say: bool) -> ModelEmaV3 | None:
    """timm's EMA of ``model``'s weights as configured (None when off); ``say`` logs it once."""
    if not config.enabled:
        return None
    if say:
        warmup = ", warmed up as 1 - (1 + update)^(-2/3) (trainer.ema.warmup)" if config.warmup else ""
        log.info("EMA of the weights (val_ema): decay %g%s", config.decay, warmup)
    return ModelEmaV3(model, decay=config.decay, use_warmup=config.warmup)


def copied(value: Any) -> Any:
    """``value`` with every tensor in it copied: a snapshot that training can no longer change.
    Mappings keep their type and a state dict its ``_metadata`` (the modules' versions)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        out = type(value)((k, copied(v)) for k, v in value.items())
        if hasattr(value, "_metadata"):
            out._metadata = value._metadata
        return out
    if isinstance(value, list | tuple):
        return type(value)(copied(v) for v in value)
    return value


def update_ema(ema: ModelEmaV3, model: nn.Module, step: int, every: int) -> None:
    """timm's EMA update for update ``step``, made every ``every`` steps only: then with the decay
    of the ``every`` single steps it stands for (the product of timm's decays, warm-up included;
    ``decay ** every`` once warmed up), which for weights that stay put gives exactly what the
    single updates would, at 1/``every`` of the cost."""
    if every == 1:
        ema.update(model, step=step)
    elif step % every == 0:
        ema.apply_update_(model, math.prod(ema.get_decay(s) for s in range(step - every + 1, step + 1)))


class Checkpointer:
    """``RUN/checkpoints/last.pt`` and ``best.pt``, written atomically by rank 0.

    An epoch's checkpoint is written on a worker thread from a snapshot of the state, while the
    next epoch trains (writing 40 MB took a fifth of a small epoch). Before anything else is
    written, and in ``close`` (the end of ``fit``, also on a signal or an error), the write in
    flight is waited for and its failure (a full disk) raised, so no later step ever runs on a
    checkpoint that did not land."""

    def __init__(self, run_dir: Path) -> None:
        self.folder = run_dir / "checkpoints"
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self.pending: Future | None = None

    def save_epoch(self, state: Checkpoint, improved: bool) -> None:
        """``last.pt``; when the monitored metric improved, ``best.pt`` is that same file."""
        self.wait()
        self.pending = self.pool.submit(self.write_epoch, copied(state), improved)

    def write_epoch(self, state: Checkpoint, improved: bool) -> None:
        save_checkpoint(state, self.folder / "last.pt")
        if improved:
            link_checkpoint(self.folder / "last.pt", self.folder / "best.pt")

    def save_mid_epoch(self, state: Checkpoint, where: dict[str, Any]) -> None:
        """``last.pt`` in the middle of an epoch (written now): the state plus where the epoch stands."""
        self.wait()
        save_checkpoint({**state, "partial": where}, self.folder / "last.pt")

    def wait(self) -> None:
        """Until the epoch's checkpoint in flight is on disk; raises what stopped it."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        self.wait()
