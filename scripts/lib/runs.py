"""What evaluate.py, predict.py and export.py share: rebuilding a run's pieces from its checkpoint.

A checkpoint carries its config, class names and weights; the scripts build from those with
the same builders as training, never a copy of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from common.errors import UserError
from common.run_folder import RunFolder
from data.split import RecordedSplit
from trainer.config import TrainerConfig
from trainer.device import autocast_dtype, check_device, resolve_device
from trainer.evaluation.calibration import Deployed, temperature_of
from trainer.evaluation.metrics import ShotThresholds


@contextlib.contextmanager
def quiet_training_choices() -> Iterator[None]:
    """Building a run's data outside training: how training would crop images is not worth a word."""
    logger = logging.getLogger("data.augment")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def dataset_settings(state: dict[str, Any], overrides: Any = None) -> DictConfig:
    """The run's dataset settings, typed by their dataclass, with the ``dataset.*`` overrides
    that are set (a DatasetOverrides; None: none) applied."""
    config = state["config"]
    name = config.get("dataset_class", "data.settings.ImageFolderSettings")
    try:
        schema = OmegaConf.structured(get_class(name))
    except (ImportError, ValueError):
        raise UserError(
            f"The checkpoint's data source {name!r} is not one this version knows (data.settings "
            f"holds them): it was written by another version of this project."
        ) from None
    given = {k: v for k, v in dataclasses.asdict(overrides).items() if v is not None} if overrides else {}
    try:
        return OmegaConf.merge(schema, config["dataset"], given)
    except OmegaConfBaseException as err:  # its first line says what is wrong; the rest is context
        key = f"dataset.{err.full_key}" if getattr(err, "full_key", None) else "dataset override"
        raise UserError(f"{key}: {str(err).splitlines()[0]}") from None


def device_and_amp(state: dict[str, Any], device: str) -> tuple[torch.device, torch.dtype | None]:
    """The device to run on and the autocast dtype training validated with."""
    check_device(device, key="device")
    trainer = state["config"].get("trainer", {})
    target = resolve_device(device)
    settings = TrainerConfig(
        device=device, amp=trainer.get("amp", False), amp_dtype=trainer.get("amp_dtype", "float16")
    )
    return target, autocast_dtype(settings, target)


SPLIT_KEYS = (
    "val_fraction",
    "folds",
    "fold",
    "split_seed",
)  # a dataset.* override of these asks for another split


def recorded_split(state: dict[str, Any], checkpoint: str, overrides: Any = None) -> RecordedSplit | None:
    """The carved split the run recorded, which the data must carve again (None: the run validated
    on a split of its own, or the launch asks for another split with a ``dataset.*`` override)."""
    record = state["config"].get("split")
    if not record or any(getattr(overrides, key, None) is not None for key in SPLIT_KEYS):
        return None
    run = RunFolder.of_checkpoint(checkpoint)
    return RecordedSplit(record, run.split_csv if run is not None and run.split_csv.is_file() else None)


def logit_adjustment(state: dict[str, Any], tau: float) -> tuple[list[int], float] | None:
    """``logit_adjust=TAU``: the checkpoint's training counts and tau, or None for 0 (no adjustment).

    Post-hoc logit adjustment (Menon et al., ICLR 2021) predicts argmax(z - tau * log prior).
    """
    if not 0.0 <= tau < float("inf"):
        raise UserError(
            f"logit_adjust={tau} must be a number >= 0: tau of post-hoc logit adjustment "
            f"(1.0 is the usual choice, 0 turns it off)."
        )
    if tau == 0.0:
        return None
    counts = state.get("class_counts")
    if not counts or min(counts) < 1:
        raise UserError(
            f"logit_adjust={tau}: the checkpoint records no training count for every class, which "
            f"the adjustment needs. Use a checkpoint written by train.py."
        )
    return list(counts), tau


def shot_thresholds(state: dict[str, Any]) -> ShotThresholds:
    """The many/few-shot thresholds the run reported with (the defaults for older checkpoints)."""
    trainer = state["config"].get("trainer", {})
    default = ShotThresholds()
    return ShotThresholds(
        many=trainer.get("many_shot", default.many), few=trainer.get("few_shot", default.few)
    )


def check_tau_norm(tau: float) -> float:
    """``tau_norm=TAU``: a number >= 0 (0: off)."""
    if not 0.0 <= tau < float("inf"):
        raise UserError(
            f"tau_norm={tau} must be a number >= 0: each class's classifier row is divided by its "
            f"norm to this power (1 equalises the norms, 0 turns it off)."
        )
    return tau


def deployed_model(
    state: dict[str, Any],
    ema: bool,
    adjust: tuple[list[int], float] | None,
    device: torch.device,
    tau_norm: float = 0.0,
) -> Deployed:
    """The checkpoint's model as the scripts use it: its classifier tau-normalised if asked
    (models.heads.tau_normalise), its calibrated temperature (1 when never calibrated) and the
    requested logit adjustment inside, on ``device``, in eval mode. With tau-norm the temperature
    is 1: one calibrated on the raw classifier's logits says nothing of the rescaled ones."""
    from models.factory import classifier_names, model_from_checkpoint  # timm: once the arguments passed
    from models.heads import tau_normalise

    model = model_from_checkpoint(state, ema=ema)
    temperature = temperature_of(state, ema)
    if tau_norm:
        try:
            tau_normalise(model, classifier_names(model), tau_norm)
        except ValueError as err:
            raise UserError(str(err)) from None
        temperature = 1.0  # a temperature fitted to the raw logits does not fit rescaled ones
    return Deployed(model, temperature, adjust).to(device).eval()
