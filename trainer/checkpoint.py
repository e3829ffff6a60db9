"""Checkpoint files: the format, writing and reading, and what goes into one and back.

One dict per file (``Checkpoint``, versioned), written atomically (``common.atomic``): a crash, a
signal or a full disk mid-save leaves the previous file intact; read with
``torch.load(weights_only=True)``, so a checkpoint cannot execute code. ``capture`` and
``restore`` turn the stateful objects of training (model, optimizer, schedule, GradScaler, EMA)
and the progress into one ``Checkpoint`` and back. ``Checkpointer`` writes ``last.pt`` after each
epoch (and mid-epoch), and ``best.pt`` from the same state when the monitored metric improved,
as timm's CheckpointSaver does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import torch
from timm.scheduler.scheduler import Scheduler
from timm.utils import ModelEmaV3
from torch import nn
from torch.optim import Optimizer

from common.atomic import atomic_link, atomic_open
from common.errors import DiskFullError, UserError, disk_full_cause
from common.files import check_file
from common.run_folder import RunFolder
from models.settings import trained_scale
from trainer.progress import Progress

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 2  # 1: the format before it carried a version (read, with defaults filled)


class Checkpoint(TypedDict):
    """One checkpoint file: everything a run needs to resume, and a script to rebuild the model."""

    version: int
    model: dict[str, torch.Tensor]  # state dict of the unwrapped model
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None  # timm scheduler state, None without a schedule
    scaler: dict[str, Any] | None  # GradScaler state, None unless fp16 on CUDA
    ema: dict[str, torch.Tensor] | None  # EMA weights, None without EMA
    epoch: int  # the last completed epoch (0 before the first)
    num_updates: int  # optimizer steps so far
    seed: int
    best_metric: float | None
    best_epoch: int | None
    monitor: str | None  # the metric best_metric is of
    class_names: list[str]
    class_counts: list[int] | None  # training images per class
    config: dict[str, Any]  # the composed run config, plus dataset_class
    partial: NotRequired[dict[str, Any]]  # where an epoch stood, in a mid-epoch checkpoint
    stale_epochs: NotRequired[int]  # epochs without a significant improvement (early stopping)
    stopped_early: NotRequired[str | None]  # why the run stops after this epoch, if early stopping ends it
    # temperature scaling fitted by evaluate.py calibrate=true, per weights ("model", "ema")
    calibration: NotRequired[dict[str, Any]]


REQUIRED_KEYS = (
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "ema",
    "epoch",
    "best_metric",
    "class_names",
    "config",
)
# what format 1 may lack, and the value that means "unknown" for each
VERSION_1_DEFAULTS: dict[str, Any] = {
    "num_updates": 0,
    "seed": 0,
    "best_epoch": None,
    "monitor": None,
    "class_counts": None,
}


# format 1 named the class of the dataset settings after the data class they were split from
FORMAT_1_DATASET_CLASSES = {
    "data.folders.ImageFolderData": "data.settings.ImageFolderSettings",
    "data.digits.DigitsData": "data.settings.DigitsSettings",
    "data.rafdb.RafDBData": "data.settings.RafDBSettings",
}


def upgrade(state: dict[str, Any], key: str, path: Path) -> Checkpoint:
    """The checkpoint in the current format; UserError for one written by a newer version."""
    version = state.get("version", 1)
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise UserError(
            f"{key}={str(path)!r} is a checkpoint of format {version}, newer than this version reads "
            f"(format {CHECKPOINT_VERSION}). Use the version of this project that wrote it."
        )
    if version == 1:
        filled = sorted(k for k in VERSION_1_DEFAULTS if k not in state)
        state = {**VERSION_1_DEFAULTS, **state, "version": CHECKPOINT_VERSION}
        config = dict(state.get("config") or {})
        if config.get("dataset_class") in FORMAT_1_DATASET_CLASSES:
            state["config"] = {**config, "dataset_class": FORMAT_1_DATASET_CLASSES[config["dataset_class"]]}
        if filled:
            log.info("%s: a format-1 checkpoint; read with defaults for %s", path, ", ".join(filled))
    return state  # type: ignore[return-value]


def save_checkpoint(state: Checkpoint, path: Path) -> None:
    """Write ``state`` to ``path`` atomically; DiskFullError, saying what is intact, if it does not fit."""
    with full_disk_named(path), atomic_open(path) as f:
        torch.save(state, f)


def link_checkpoint(source: Path, path: Path) -> None:
    """``path`` becomes the checkpoint ``source`` without writing it again (``atomic_link``)."""
    with full_disk_named(path):
        atomic_link(source, path)


@contextmanager
def full_disk_named(path: Path) -> Iterator[None]:
    """A write of ``path`` that finds the disk full raises DiskFullError saying what is intact."""
    try:
        yield
    except Exception as err:
        full = disk_full_cause(err)
        if full is None:
            raise
        kept = f"the previous {path.name} is intact" if path.is_file() else f"no earlier {path.name} existed"
        raise DiskFullError(
            f"Could not write the checkpoint {path} ({full.strerror}): the disk is full, or a quota or "
            f"file-size limit was reached; {kept}. Free some space, then continue with resume=auto "
            f"and the same hydra.run.dir."
        ) from err


CHECKPOINT_HINT = "a checkpoint path (e.g. RUN/checkpoints/last.pt)"


def load_checkpoint(path: str | Path, key: str = "resume") -> Checkpoint:
    """Read a checkpoint on the CPU; UserError naming ``key`` if it is missing or not ours."""
    path = Path(path)
    check_file(path, key, CHECKPOINT_HINT)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch's text may advise weights_only=False, which would run its code
        raise UserError(
            f"{key}={str(path)!r} is not a readable checkpoint ({type(err).__name__}): it may be truncated "
            f"or another kind of file. Give a checkpoint written by train.py (RUN/checkpoints/last.pt)."
        ) from err
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise UserError(f"{key}={str(path)!r} is not a checkpoint of this trainer (missing keys: {missing}).")
    return upgrade(state, key, path)


def resume_run_dir(resume: str | None, run_dir: Path) -> Path:
    """Where the run writes: a checkpoint path continues in the checkpoint's own run directory."""
    if resume in (None, "auto"):
        return run_dir
    folder = RunFolder.of_checkpoint(resume)
    return folder.root if folder is not None else run_dir


def resolve_resume(resume: str | None, run_dir: Path) -> Checkpoint | None:
    """The checkpoint to continue from, if any.

    ``resume=auto`` takes ``RUN/checkpoints/last.pt`` of this run directory when it exists and
    starts fresh otherwise; a path is read as given.
    """
    if resume is None:
        return None
    if resume == "auto":
        last = RunFolder(run_dir).last
        if not last.is_file():
            log.info("resume=auto: no %s yet, starting fresh", last)
            return None
        resume = str(last)
    return load_checkpoint(resume)


def check_compatible(state: Checkpoint, model: Mapping[str, Any], class_names: list[str], key: str) -> None:
    """Refuse a checkpoint of another model, head, head scale or other classes, naming both values."""
    saved = state["config"].get("model", {})
    for name in ("name", "head"):
        if saved.get(name, model[name]) != model[name]:
            raise UserError(
                f"{key} holds a model with model.{name}={saved[name]!r}, but this run has "
                f"model.{name}={model[name]!r}. Resume with the checkpoint's own."
            )
    if model["head"] == "cosine" and trained_scale(state["config"]) != model["cosine_scale"]:
        raise UserError(
            f"{key} was trained with model.cosine_scale={trained_scale(state['config'])}, but this run has "
            f"{model['cosine_scale']}. Resume with the checkpoint's own (it is saved with the head)."
        )
    if state["class_names"] != class_names:
        raise UserError(
            f"{key} was trained on {len(state['class_names'])} classes {state['class_names']}, but the "
            f"dataset has {len(class_names)}: {class_names}. Resume on the same data (dataset.root) "
            f"or start a new run."
        )


def schedule_changes(saved: dict[str, Any], planned: dict[str, Any]) -> str:
    """The settings in which a checkpoint's scheduler differs from the one built now, or "".

    timm's schedulers keep their settings (length in updates, warm-up, minimum, base lrs) in
    their state, so loading an old state would silently restore the old plan.
    """
    keys = sorted(k for k in saved.keys() | planned.keys() if saved.get(k) != planned.get(k))
    return ", ".join(f"{k} {saved.get(k)} -> {planned.get(k)}" for k in keys)


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


class Checkpointer:
    """``RUN/checkpoints/last.pt`` and ``best.pt``, written atomically by rank 0.

    An epoch's checkpoint is written on a worker thread from a snapshot of the state, while the
    next epoch trains (writing 40 MB took a fifth of a small epoch). Before anything else is
    written, and in ``close`` (the end of ``fit``, also on a signal or an error), the write in
    flight is waited for and its failure (a full disk) raised, so no later step ever runs on a
    checkpoint that did not land. A checkpoint may wait for the epoch's record (``after``): then
    ``last.pt`` never holds an epoch that metrics.csv lacks, even after a kill."""

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self.pending: Future | None = None

    def save_epoch(self, state: Checkpoint, improved: bool, after: Future | None = None) -> None:
        """``last.pt``, once ``after`` is done (however it ended); when the monitored metric
        improved, ``best.pt`` is that same file."""
        self.wait()
        self.pending = self.pool.submit(self.write_epoch, copied(state), improved, after)

    def write_epoch(self, state: Checkpoint, improved: bool, after: Future | None = None) -> None:
        if after is not None:
            futures.wait([after])  # its failure is its owner's to report
        save_checkpoint(state, self.folder.last)
        if improved:
            link_checkpoint(self.folder.last, self.folder.best)

    def save_mid_epoch(self, state: Checkpoint, where: dict[str, Any]) -> None:
        """``last.pt`` in the middle of an epoch (written now): the state plus where the epoch stands."""
        self.wait()
        save_checkpoint({**state, "partial": where}, self.folder.last)

    def wait(self) -> None:
        """Until the epoch's checkpoint in flight is on disk; raises what stopped it."""
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        self.wait()
