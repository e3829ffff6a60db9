"""Checks of the ``model`` config group that need no library: run before timm is imported."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.errors import UserError
from common.files import check_file


def check_model_group(model: Mapping[str, Any]) -> None:
    """A weights file that is not there, or a frozen backbone with no weights to freeze."""
    weights = model.get("checkpoint_path")
    if weights:
        check_file(weights, "model.checkpoint_path", "a local weights file")
    if model.get("freeze_backbone") and not (weights or model.get("pretrained")):
        raise UserError(
            "model.freeze_backbone=true trains the classifier alone on a frozen backbone, but no backbone "
            "weights are given, so it would stay random. Give them with model.checkpoint_path=FILE (for "
            "experiment=crt: the stage-1 run's checkpoints/best.pt) or model.pretrained=true."
        )
