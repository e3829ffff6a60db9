"""What evaluate.py, predict.py and export.py share: rebuilding a run's pieces from its checkpoint.

A checkpoint carries its config, class names and weights; the scripts build from those with
the same builders as training, never a copy of them.
"""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from trainer.config import TrainerConfig
from trainer.errors import UserError
from trainer.trainer import autocast_dtype, resolve_device


def dataset_settings(state: dict[str, Any], overrides: dict[str, str]) -> DictConfig:
    """The run's dataset settings, typed by its dataclass, with ``dataset.*`` overrides applied."""
    config = state["config"]
    schema = OmegaConf.structured(get_class(config.get("dataset_class", "data.ImageFolderData")))
    given = OmegaConf.from_dotlist([f"{k.removeprefix('dataset.')}={v}" for k, v in overrides.items()])
    try:
        return OmegaConf.merge(schema, config["dataset"], given)
    except Exception as err:  # OmegaConf's message names the key and the expected type
        raise UserError(f"dataset override: {err}") from err


def device_and_amp(state: dict[str, Any], device: str) -> tuple[torch.device, torch.dtype | None]:
    """The device to run on and the autocast dtype training validated with."""
    trainer = state["config"].get("trainer", {})
    target = resolve_device(device)
    settings = TrainerConfig(
        device=device, amp=trainer.get("amp", False), amp_dtype=trainer.get("amp_dtype", "float16")
    )
    return target, autocast_dtype(settings, target)
