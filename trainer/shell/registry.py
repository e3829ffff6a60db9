"""What train.py and the scripts give Hydra before it composes a config: the dataclasses that
type the ``dataset`` and ``trainer`` groups, and the resolvers the configs use."""

from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from data.sources import find_sources
from trainer.config import TrainerConfig
from trainer.shell.sweep import optuna_storage, sweep_subdir


def plain(node: Any) -> Any:
    """A config node as plain data (a resolver's argument); anything else as it is."""
    return OmegaConf.to_container(node) if OmegaConf.is_config(node) else node


def register_configs() -> None:
    """Type the dataset and trainer groups by their dataclasses, so Hydra rejects wrong keys and types."""
    cs = ConfigStore.instance()
    for name, node in find_sources().items():
        cs.store(group="schema/dataset", name=name, node=node)
    cs.store(group="schema/trainer", name="default", node=TrainerConfig)
    if not OmegaConf.has_resolver("sweep_subdir"):
        OmegaConf.register_new_resolver(
            "sweep_subdir",
            lambda num, task, params=None, *, _root_: sweep_subdir(
                int(num), list(task), plain(params), _root_
            ),
        )
    if not OmegaConf.has_resolver("optuna_storage"):
        OmegaConf.register_new_resolver("optuna_storage", optuna_storage)
