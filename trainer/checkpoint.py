"""Checkpoint files: one dict per file, written atomically, read without running code.

Writing is atomic (``trainer.atomic``): a crash, a signal or a full disk mid-save leaves the
previous file intact. Reading uses ``torch.load(weights_only=True)``, so a checkpoint cannot
execute code.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import torch

from common.errors import DiskFullError, UserError, disk_full_cause
from common.files import check_file
from models.settings import trained_scale
from trainer.atomic import atomic_link, atomic_open

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


def run_dir_of(checkpoint: str | Path) -> Path | None:
    """The run directory a checkpoint belongs to (``RUN/checkpoints/x.pt`` -> RUN), if it has that layout."""
    parent = Path(checkpoint).resolve().parent
    return parent.parent if parent.name == "checkpoints" else None


def resume_run_dir(resume: str | None, run_dir: Path) -> Path:
    """Where the run writes: a checkpoint path continues in the checkpoint's own run directory."""
    if resume in (None, "auto"):
        return run_dir
    return run_dir_of(resume) or run_dir


def resolve_resume(resume: str | None, run_dir: Path) -> Checkpoint | None:
    """The checkpoint to continue from, if any.

    ``resume=auto`` takes ``RUN/checkpoints/last.pt`` of this run directory when it exists and
    starts fresh otherwise; a path is read as given.
    """
    if resume is None:
        return None
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.pt"
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
