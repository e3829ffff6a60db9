"""Checkpoint files: one dict per file, written atomically, read without running code.

Writing is atomic (``trainer.atomic``): a crash, a signal or a full disk mid-save leaves the
previous file intact. Reading uses ``torch.load(weights_only=True)``, so a checkpoint cannot
execute code.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from common.errors import DiskFullError, UserError, disk_full_cause
from common.files import check_file
from trainer.atomic import atomic_open

log = logging.getLogger(__name__)

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


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically; DiskFullError, saying what is intact, if it does not fit."""
    try:
        with atomic_open(path) as f:
            torch.save(state, f)
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


def load_checkpoint(path: str | Path, key: str = "resume") -> dict[str, Any]:
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
    return state


def run_dir_of(checkpoint: str | Path) -> Path | None:
    """The run directory a checkpoint belongs to (``RUN/checkpoints/x.pt`` -> RUN), if it has that layout."""
    parent = Path(checkpoint).resolve().parent
    return parent.parent if parent.name == "checkpoints" else None


def resume_run_dir(resume: str | None, run_dir: Path) -> Path:
    """Where the run writes: a checkpoint path continues in the checkpoint's own run directory."""
    if resume in (None, "auto"):
        return run_dir
    return run_dir_of(resume) or run_dir


def resolve_resume(resume: str | None, run_dir: Path) -> dict[str, Any] | None:
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


def check_compatible(state: dict[str, Any], model_name: str, class_names: list[str], key: str) -> None:
    """Refuse a checkpoint of another model or other classes, naming both values."""
    saved_model = state["config"].get("model", {}).get("name")
    if saved_model != model_name:
        raise UserError(
            f"{key} holds model {saved_model!r}, but model.name={model_name!r}. "
            f"Resume with the checkpoint's own model (model.name={saved_model})."
        )
    if state["class_names"] != class_names:
        raise UserError(
            f"{key} was trained on {len(state['class_names'])} classes {state['class_names']}, but the "
            f"dataset has {len(class_names)}: {class_names}. Resume on the same data (dataset.root) "
            f"or start a new run."
        )
