"""Build a classifier with ``timm.create_model``: any timm name, our class count, optional weights.

Weights come either from timm's pretrained registry (``pretrained=True``, needs the hub or its
local cache) or from a local file (``checkpoint_path``: a timm/ImageNet state dict, a
``.safetensors`` file, or one of our checkpoints). A local file is loaded by parameter name;
only the classifier may differ (another class count or head), anything else that does not fit
is refused with the names that differ.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlparse

import huggingface_hub.constants
import timm
import torch
from timm.models import load_state_dict
from timm.utils.model import freeze
from torch import nn

from common.errors import UserError
from common.files import check_file
from models.heads import (
    DEFAULT_SCALE,
    HEADS,
    add_class_scales,
    replace_classifier,
    train_class_scales_only,
)
from models.settings import trained_scale

log = logging.getLogger(__name__)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the model hub opens within ``timeout`` seconds."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def hub_offline(offline: bool) -> Iterator[None]:
    """Put huggingface_hub in its offline mode for the block (answers from its cache at once).

    Without it an unreachable hub costs about a minute of retries before the download fails.
    """
    before = huggingface_hub.constants.HF_HUB_OFFLINE
    huggingface_hub.constants.HF_HUB_OFFLINE = before or offline
    try:
        yield
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = before


def classifier_names(model: nn.Module) -> tuple[str, ...]:
    """Module names of the final classifier(s), from the model's pretrained config."""
    names = model.pretrained_cfg.get("classifier") or ()
    return (names,) if isinstance(names, str) else tuple(names)


def load_weights(model: nn.Module, path: Path, model_name: str, reinit_head: bool = False) -> None:
    """Load a local weights file by name; only classifier weights may be missing or misfit.

    ``reinit_head`` keeps the model's freshly initialised classifier even where the file has one.
    """
    state = load_state_dict(str(path), use_ema=False)
    heads = tuple(f"{name}." for name in classifier_names(model))
    scales = {f"{head}scale" for head in heads}  # a cosine head's scale: the config's cosine_scale wins
    state = {k: v for k, v in state.items() if k not in scales}
    own = {k: v for k, v in model.state_dict().items() if k not in scales}
    if reinit_head:
        state = {k: v for k, v in state.items() if not k.startswith(heads)}
    scaled = sorted(k for k in state if k.endswith(".class_scale") and k not in own)
    if scaled:  # dropping the learned scales would change every prediction of that classifier
        raise UserError(
            f"model.checkpoint_path={str(path)!r} holds a classifier with learned class scales "
            f"({scaled[0]}, from model.lws=true). Load it with model.lws=true, or start a fresh "
            f"classifier with model.reinit_head=true."
        )
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    differ = differences(own, state, skip=heads)
    if differ:
        raise UserError(
            f"model.checkpoint_path={str(path)!r} does not hold weights for model.name={model_name!r}: "
            f"{differ}. Use a file saved from {model_name} (only the classifier may differ) or set "
            f"model.name to match."
        )
    model.load_state_dict(fitting, strict=False)


def differences(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], skip: tuple = ()) -> str:
    """What keeps ``state`` from loading into a model whose state dict is ``own`` (tensors missing,
    unexpected, of another shape; names starting with ``skip`` left out), in words; "" if nothing."""
    missing = sorted(k for k in own if k not in state and not k.startswith(skip))
    unexpected = sorted(k for k in state if k not in own and not k.startswith(skip))
    misfit = sorted(
        k for k in state if k in own and own[k].shape != state[k].shape and not k.startswith(skip)
    )
    if not (missing or unexpected or misfit):
        return ""
    return (
        f"{len(missing)} tensor(s) missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
        f"(e.g. {unexpected[:3]}), {len(misfit)} of another shape (e.g. {misfit[:3]})"
    )


def create_model(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    checkpoint_path: str | None = None,
    drop_path_rate: float = 0.0,
    head: str = "linear",
    cosine_scale: float = DEFAULT_SCALE,
    head_init_scale: float | None = None,
    reinit_head: bool = False,
    freeze_backbone: bool = False,
    freeze_backbone_epochs: int = 0,  # the Trainer's (trainer/freeze.py): the model is built whole
    max_norm: float | None = None,  # the Trainer's (models.heads.cap_row_norms after each update)
    max_norm_relative: bool = False,  # the Trainer's too
    shift_bn: bool = False,
    lws: bool = False,
    **kwargs,
) -> nn.Module:
    """A timm model with ``num_classes`` outputs and a linear or cosine head (``cosine_scale``
    times the cosines: the logits the softmax sees).

    ``checkpoint_path`` wins over ``pretrained``: the file is the pretrained weights.
    ``head_init_scale`` (timm's ConvNeXt argument, 0.001 in ConvNeXt-V2's fine-tuning) scales a
    freshly initialised classifier; a cosine head's weights alike (its outputs stay s * cosine).
    ``reinit_head`` keeps a fresh classifier instead of the file's. ``freeze_backbone`` trains
    the classifier only: every other parameter stops requiring gradients (so the optimizer
    gives it no state and no weight decay), and timm's ``freeze`` turns BatchNorm layers into
    torchvision's FrozenBatchNorm2d, whose statistics never change (the classifier re-training
    stage of Kang et al., ICLR 2020, "Decoupling Representation and Classifier for Long-Tailed
    Recognition"); with ``shift_bn`` the BatchNorm layers stay BatchNorm, so their running statistics
    follow the new training data while their weights stay frozen (MiSLAS's shifted BatchNorm,
    Zhong et al., CVPR 2021). ``lws`` adds a learned per-class scale on the classifier, whose own
    weights freeze (``models.heads.add_class_scales``).
    """
    check_model(name, head, drop_path_rate)
    if checkpoint_path:
        check_file(checkpoint_path, "model.checkpoint_path", "a local weights file")
    from_hub = pretrained and not checkpoint_path
    if head_init_scale is not None:
        kwargs["head_init_scale"] = head_init_scale
    try:
        with hub_offline(from_hub and not hub_reachable()):
            model = timm.create_model(
                name, pretrained=from_hub, num_classes=num_classes, drop_path_rate=drop_path_rate, **kwargs
            )
    except TypeError as err:
        if "head_init_scale" not in str(err):
            raise
        raise UserError(
            f"model.head_init_scale={head_init_scale}: {name} does not take it (timm's ConvNeXt models "
            f"do). Use model.head_init_scale=null with this model."
        ) from None
    except (OSError, RuntimeError) as err:
        if not from_hub:
            raise
        raise UserError(
            f"model.pretrained=true: timm's pretrained weights for {name!r} could not be loaded "
            f"({type(err).__name__}: {str(err)[:200]}). The model hub may be unreachable from this machine: "
            f"download the weights where it is reachable and pass the file with model.checkpoint_path=FILE."
        ) from err
    if head == "cosine":
        names = classifier_names(model)
        if len(names) != 1:
            raise UserError(f"model.head=cosine needs one final linear layer; {name} has {names or 'none'}.")
        replace_classifier(model, names[0], num_classes, cosine_scale)
        if head_init_scale is not None:
            model.get_submodule(names[0]).weight.data.mul_(head_init_scale)
    if lws:  # before loading: a file saved from an LWS run holds the scales
        add_class_scales(model, classifier_names(model))
    if checkpoint_path:
        load_weights(model, Path(checkpoint_path), name, reinit_head)
    if freeze_backbone:
        freeze_all_but_classifier(model, keep_statistics=not shift_bn)
        if shift_bn and not has_batch_norm(model):
            log.info(
                "model.shift_bn: %s has no BatchNorm layer, so there are no statistics to shift (its "
                "LayerNorm normalises each image by its own statistics)",
                name,
            )
    if lws:
        train_class_scales_only(model, classifier_names(model))
    return model


def check_model(name: str, head: str, drop_path_rate: float) -> None:
    """UserError naming ``model.name``, ``model.head`` or ``model.drop_path_rate`` when timm or the
    head would reject it (cheap: no model is built)."""
    if head not in (*HEADS, "auto"):
        raise UserError(f"model.head={head!r} is not one of: {', '.join(HEADS)}, auto.")
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0][:12]}*")[:8]
        raise UserError(
            f"model.name={name!r} is not a timm model. Similar names: {', '.join(close) or 'none'}; "
            f"`python -c \"import timm; print(timm.list_models('convnext*'))\"` lists them all."
        )
    if not 0.0 <= drop_path_rate < 1.0:
        raise UserError(f"model.drop_path_rate={drop_path_rate} is a probability: use a value in [0, 1).")


PROBE_SIZES = range(8, 1025, 8)  # image sizes tried for the smallest one a model takes


def fits(model: nn.Module, image_size: int, batch: int = 2) -> str | None:
    """Why ``model``'s feature extractor (on the meta device) cannot take a batch of
    ``image_size`` images, or None. Only the features: the classifier takes any pooled size."""
    try:
        with torch.no_grad():
            model.forward_features(torch.empty(batch, 3, image_size, image_size, device="meta"))
    except NotImplementedError:  # an operation the meta device lacks: nothing is known
        return None
    except (RuntimeError, ValueError, AssertionError) as err:
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    return None


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def probe_model(model_settings: dict, image_size: int, batch_size: int) -> None:
    """Build the model without memory (the meta device) and refuse image sizes it cannot take and a
    batch of one image on BatchNorm, naming both settings; cheap, before any data is read."""
    settings = {k: v for k, v in model_settings.items() if not k.startswith("_")}
    settings.update(pretrained=False, checkpoint_path=None, freeze_backbone=False)
    settings["head"] = "linear" if settings.get("head") == "auto" else settings.get("head", "linear")
    name = settings.pop("name")
    with torch.device("meta"):
        model = create_model(name, num_classes=2, **settings)
    model.eval()
    problem = fits(model, image_size)
    # refused only when a larger size fits: an error at every size says nothing about the size
    smallest = problem and next((s for s in PROBE_SIZES if s > image_size and fits(model, s) is None), None)
    if smallest:
        default = model.pretrained_cfg.get("input_size", (3, None, None))[-1]
        raise UserError(
            f"dataset.image_size={image_size} is too small for model.name={name!r} ({problem}): the "
            f"smallest size it takes is {smallest}, and it was made for {default} px. Set "
            f"dataset.image_size={smallest} or another size it takes."
        )
    if batch_size == 1 and has_batch_norm(model):
        raise UserError(
            f"dataset.batch_size=1 with model.name={name!r}: its BatchNorm layers cannot train on batches "
            f"of one image. Use dataset.batch_size=2 or more (with trainer.accumulate_steps for the memory), "
            f"or a model without BatchNorm (e.g. ConvNeXt)."
        )


def check_weights_file(path: str) -> None:
    """UserError naming ``model.checkpoint_path`` if the file cannot be read as weights."""
    check_file(path, "model.checkpoint_path", "a local weights file")
    try:
        state = load_state_dict(path, use_ema=False)
    except Exception as err:  # torch's text may advise weights_only=False, which would run its code
        raise UserError(
            f"model.checkpoint_path={path!r} cannot be read as weights ({type(err).__name__}): it may be "
            f"truncated or another kind of file. Give a state dict (.pth, .bin), a .safetensors file or a "
            f"checkpoint of train.py."
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(
            f"model.checkpoint_path={path!r} holds no tensors by name (a state dict). Give a state dict "
            f"(.pth, .bin), a .safetensors file or a checkpoint of train.py."
        )


def trained_classes(path: str) -> list[str] | None:
    """The class names a checkpoint of train.py was trained on, in order; None for a plain weights
    file (timm's, ImageNet's), which names no classes. Read without loading the tensors (mmap)."""
    if path.endswith(".safetensors"):
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not torch's zip format: check_weights_file has read it another way
        return None
    names = state.get("class_names") if isinstance(state, dict) else None
    return [str(name) for name in names] if isinstance(names, list) else None


def freeze_all_but_classifier(model: nn.Module, keep_statistics: bool = True) -> None:
    """timm's ``freeze`` on the whole model (BatchNorm's running statistics too with
    ``keep_statistics``), then the classifier trains again."""
    freeze(model, include_bn_running_stats=keep_statistics)
    for name in classifier_names(model):
        model.get_submodule(name).requires_grad_(True)


def model_from_checkpoint(state: dict, ema: bool = False) -> nn.Module:
    """The trained model of one of our checkpoints (its EMA weights with ``ema``), in eval mode."""
    settings = state["config"]["model"]
    if ema and state.get("ema") is None:
        raise UserError("ema=true, but this checkpoint was trained without EMA (trainer.ema.enabled=false).")
    model = create_model(
        settings["name"],
        num_classes=len(state["class_names"]),
        drop_path_rate=settings.get("drop_path_rate", 0.0),
        head=settings.get("head", "linear"),
        cosine_scale=trained_scale(state["config"]),
        freeze_backbone=settings.get("freeze_backbone", False),  # same module types as trained
        shift_bn=settings.get("shift_bn", False),
        lws=settings.get("lws", False),
    )
    weights = state["ema"] if ema else state["model"]
    what = f"the checkpoint's {'EMA' if ema else 'model'} weights"
    check_finite(weights, what)
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        refuse_misfit(model, weights, what, settings["name"])
        raise
    return model.eval()


def refuse_misfit(model: nn.Module, weights: dict[str, torch.Tensor], what: str, model_name: str) -> None:
    """UserError naming the tensors of ``weights`` that ``model`` lacks, needs or shapes otherwise."""
    differ = differences(model.state_dict(), weights)
    if differ:
        raise UserError(
            f"{what} do not fit the model it records (model.name={model_name!r}): {differ}. The file was "
            f"changed after train.py wrote it; use a checkpoint as train.py saved it."
        )


def check_finite(weights: dict[str, torch.Tensor], what: str) -> None:
    """UserError naming the tensors of ``weights`` that hold NaN or infinite values."""
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise UserError(
            f"{what} hold NaN or infinite values in {len(bad)} tensor(s) (e.g. {bad[:3]}): the run had "
            f"diverged when it was saved, and every output would be NaN. Use a checkpoint of an "
            f"earlier epoch or of a run that did not diverge."
        )
