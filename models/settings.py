"""Checks of the ``model`` config group that need no library: run before timm is imported."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.errors import UserError
from common.files import check_file

LDAM = "losses.LDAMLoss"  # the loss whose margins live in the cosine head's units


def check_model_group(model: Mapping[str, Any], loss_target: str = "") -> None:
    """A weights file that is not there, a frozen backbone with no weights to freeze, a scale
    that is not positive, a cap that cannot act (``loss_target``: the loss's ``_target_``, which
    ``model.head=auto`` follows)."""
    init = model.get("head_init_scale")
    if init is not None and (not isinstance(init, float | int) or not init > 0):
        raise UserError(
            f"model.head_init_scale={init!r} must be a positive number (0.001 when fine-tuning ConvNeXt-V2), "
            f"or null for timm's own initialisation."
        )
    scale = model.get("cosine_scale", 30.0)
    if not isinstance(scale, float | int) or not scale > 0:
        raise UserError(
            f"model.cosine_scale={scale!r} must be a positive number: the cosine head's logits are this "
            f"times the cosines (30 in LDAM's reference code; 10 to 30 is usual)."
        )
    cap = model.get("max_norm")
    if cap is not None and (not isinstance(cap, float | int) or not cap > 0):
        raise UserError(
            f"model.max_norm={cap!r} must be a positive number: the largest norm a class's classifier "
            f"row may keep after each update (MaxNorm, weight balancing), or null for no cap."
        )
    if model.get("max_norm_relative") and cap is not None and not 0 <= cap <= 1:
        raise UserError(
            f"model.max_norm={cap!r} with model.max_norm_relative=true is a fraction in [0, 1]: the cap "
            f"lies that far from the smallest class row norm of the starting classifier to the largest "
            f"(0.1 in weight balancing's second stage)."
        )
    head = model.get("head", "linear")
    cosine = head == "cosine" or (head == "auto" and loss_target == LDAM)
    if cap is not None and cosine:
        raise UserError(
            f"model.max_norm={cap!r} caps the norms of a linear classifier's rows; the cosine head "
            f"(model.head={head}{', chosen for LDAM' if head == 'auto' else ''}) normalises its rows "
            f"in every forward pass, so the cap would do nothing. Drop model.max_norm, or train a "
            f"linear head (model.head=linear)."
        )
    weights = model.get("checkpoint_path")
    if model.get("shift_bn") and not model.get("freeze_backbone"):
        raise UserError(
            "model.shift_bn=true lets a frozen backbone's BatchNorm statistics follow the new training "
            "data; it needs model.freeze_backbone=true (a backbone that trains updates them anyway)."
        )
    if model.get("lws") and (model.get("reinit_head") or not (weights or model.get("pretrained"))):
        raise UserError(
            "model.lws=true learns one scale per class on a trained, frozen classifier; give the stage-1 "
            "weights with model.checkpoint_path=FILE and keep model.reinit_head=false (a fresh frozen "
            "classifier would stay random)."
        )
    if weights:
        check_file(weights, "model.checkpoint_path", "a local weights file")
    epochs = model.get("freeze_backbone_epochs") or 0
    if not isinstance(epochs, int) or epochs < 0:
        raise UserError(f"model.freeze_backbone_epochs={epochs!r} must be a number of epochs >= 0.")
    if epochs and model.get("freeze_backbone"):
        raise UserError(
            "model.freeze_backbone=true freezes the backbone for the whole run; "
            f"model.freeze_backbone_epochs={epochs} for the first epochs only. Choose one."
        )
    if epochs and not (weights or model.get("pretrained")):
        raise UserError(
            f"model.freeze_backbone_epochs={epochs} protects pretrained features from a fresh classifier, "
            "but no backbone weights are given. Give them with model.checkpoint_path=FILE or "
            "model.pretrained=true, or drop the setting."
        )
    if model.get("freeze_backbone") and not (weights or model.get("pretrained")):
        raise UserError(
            "model.freeze_backbone=true trains the classifier alone on a frozen backbone, but no backbone "
            "weights are given, so it would stay random. Give them with model.checkpoint_path=FILE (for "
            "experiment=crt: the stage-1 run's checkpoints/best.pt) or model.pretrained=true."
        )


def trained_scale(config: dict) -> float:
    """The cosine head's scale a run trained with; for checkpoints that predate
    ``model.cosine_scale``, the scale their softmax saw (LDAM's ``s``, else none)."""
    if "cosine_scale" in config["model"]:
        return config["model"]["cosine_scale"]
    return config["loss"].get("s", 1.0) if config["loss"]["_target_"] == LDAM else 1.0
