"""The composed config, checked before any heavy library loads, and recorded for the checkpoint.

``validate`` refuses what the settings alone show to be wrong: no file is read, no torch, timm or
TensorBoard imported, so a mistake costs the time it takes to compose the config.
``run_config`` is the config as the checkpoint keeps it (the scripts rebuild the run from it),
``group_choices`` the option chosen in each config group, as typed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from common.errors import UserError
from common.files import check_file
from common.run_folder import RunFolder
from data.mixup import check_mixup_group
from data.settings import DataSettings
from models.settings import check_model_group
from trainer.shell.rundir import check_writable


def validate(cfg: DictConfig) -> None:
    """Refuse what the settings alone show to be wrong: no file is read, no heavy library loaded."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError as err:
        reason = str(err).splitlines()[0]
        raise UserError(f"{err.full_key}: {reason}. Set the variable, or give the value itself.") from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise UserError(f"Required setting(s) not given: {', '.join(missing)}. Add e.g. {missing[0]}=VALUE.")
    if not isinstance(cfg.seed, int) or not 0 <= cfg.seed < 2**32:
        raise UserError(f"seed={cfg.seed!r} must be an integer from 0 to 2**32 - 1 = {2**32 - 1}.")
    if not isinstance(cfg.optimizer.lr, float | int) or not 0 < cfg.optimizer.lr < float("inf"):
        raise UserError(f"optimizer.lr={cfg.optimizer.lr} must be a positive number, e.g. optimizer.lr=1e-4.")
    OmegaConf.to_object(cfg.trainer)  # each dataclass checks its own values
    OmegaConf.to_object(cfg.dataset)
    if cfg.mixup:
        check_mixup_group(cfg.mixup, cfg.dataset.batch_size)
    if cfg.resume not in (None, "auto"):
        check_file(cfg.resume, "resume", "a checkpoint path (e.g. RUN/checkpoints/last.pt)")
        folder = RunFolder.of_checkpoint(cfg.resume)
        if folder is not None:  # the run continues in the checkpoint's own folder
            check_writable(folder.root)
    check_model_group(cfg.model, str(OmegaConf.select(cfg, "loss._target_", default="")))


def group_choices() -> dict[str, str]:
    """The option chosen in each config group (``loss`` -> ``ldam``), as the user types them."""
    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {k: str(v) for k, v in choices.items() if v is not None and not k.startswith("hydra/")}


def run_config(cfg: DictConfig, dataset: DataSettings) -> dict[str, Any]:
    """The config as plain data for the checkpoint, with the dataset settings' class for the scripts;
    ``dataset.root`` absolute, so that a script run from another folder finds the data."""
    config = OmegaConf.to_container(cfg, resolve=True)
    if cfg.dataset.root is not None:
        config["dataset"]["root"] = str(Path(cfg.dataset.root).expanduser().absolute())
    config["dataset_class"] = f"{type(dataset).__module__}.{type(dataset).__qualname__}"
    return config
