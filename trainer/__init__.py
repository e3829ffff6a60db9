"""The Trainer loop, its settings, checkpoints and run logs."""

from trainer.config import EMAConfig, TrainerConfig
from trainer.errors import UserError
from trainer.trainer import Trainer

__all__ = ["EMAConfig", "Trainer", "TrainerConfig", "UserError"]
