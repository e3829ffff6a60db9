"""Where the model looks: Grad-CAM class-activation maps (Selvaraju et al., ICCV 2017) through captum.

captum (PyTorch's own interpretability library) computes them: ``LayerGradCam`` weighs the
feature map of a layer by the gradient of the class score and keeps the positive part. It is
chosen over pytorch-grad-cam, which needs OpenCV for its resizing; captum needs only torch.
The layer is the deepest feature stage timm describes (``feature_info``: ConvNeXt's ``stages.3``,
ResNet's ``layer4``) whose map at the input size is at least 4 x 4 cells (at 224 px the last
stage, 7 x 7; at 32 px a 1 x 1 last stage would colour the whole image alike, so an earlier one),
so nothing is typed per architecture; a model whose stage is not a map of shape (N, C, H, W)
(a vision transformer's tokens) is refused, naming why.
``overlay`` lays the map over the original image where the validation transform's centre crop
took it from, so the picture has the image's own size.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image
from torch import nn

from common.errors import UserError

ALPHA = 0.6  # the colour's share of the hottest pixels
MIN_CELLS = 4  # a map's side, in cells, below which it cannot say where in the image


def feature_layer(model: nn.Module, image_size: int, name: str = "model") -> tuple[str, nn.Module]:
    """The deepest feature stage of a timm model (its ``feature_info``) with a map of at least
    MIN_CELLS cells a side at ``image_size`` (else the first stage); UserError if it has none."""
    for module in model.modules():
        info = getattr(module, "feature_info", None)
        if info:
            stages = info if isinstance(info, list) else info.get_dicts()
            fine = [s for s in stages if image_size // s.get("reduction", 1) >= MIN_CELLS] or stages[:1]
            return fine[-1]["module"], module.get_submodule(fine[-1]["module"])
    raise UserError(f"cam=true: {name} describes no feature stages (timm's feature_info), so no map to show.")


class ClassActivationMaps:
    """Grad-CAM maps of ``model`` for the classes it is asked about, at the input's resolution."""

    def __init__(self, model: nn.Module, image_size: int, name: str = "model") -> None:
        from captum.attr import LayerGradCam

        self.model, self.name = model, name
        self.layer_name, self.layer = feature_layer(model, image_size, name)
        self.gradcam = LayerGradCam(model, self.layer)

    def check(self, image_size: int, device: torch.device) -> None:
        """Refuse, before any image is read, a model whose last feature stage is no (N, C, H, W) map."""
        shapes: list[torch.Size] = []
        hook = self.layer.register_forward_hook(lambda _m, _i, out: shapes.append(out.shape))
        try:
            with torch.no_grad():
                self.model(torch.zeros(1, 3, image_size, image_size, device=device))
        finally:
            hook.remove()
        if len(shapes[0]) != 4:
            raise UserError(
                f"cam=true: the feature stage {self.layer_name} of {self.name} gives {tuple(shapes[0])}, "
                f"not a map (N, C, H, W) (a transformer's tokens): class-activation maps need a "
                f"convolutional model."
            )
        self.cells = tuple(shapes[0][-2:])

    def describe(self) -> str:
        """Which layer the maps come from, and how fine they are."""
        return f"Grad-CAM of {self.layer_name}, a {self.cells[0]} x {self.cells[1]} map"

    def maps(self, images: torch.Tensor, classes: torch.Tensor) -> np.ndarray:
        """(N, H, W) maps in [0, 1], one per image for its class in ``classes``."""
        from captum.attr import LayerAttribution

        with torch.enable_grad():
            attribution = self.gradcam.attribute(images, target=classes, relu_attributions=True)
        size = images.shape[-2:]
        heat = LayerAttribution.interpolate(attribution.detach(), size, interpolate_mode="bilinear")[:, 0]
        heat = heat.clamp_min(0).cpu().numpy()  # (N, H, W)
        top = heat.reshape(len(heat), -1).max(axis=1).reshape(-1, 1, 1)
        return np.divide(heat, top, out=np.zeros_like(heat), where=top > 0)


def crop_box(width: int, height: int, crop_pct: float) -> tuple[int, int, int, int]:
    """Where the validation transform's centre crop lies in the original image (timm's resize of
    the shorter side, then a square crop of crop_pct of it)."""
    side = min(width, height) * crop_pct
    left, top = (width - side) / 2, (height - side) / 2
    return round(left), round(top), round(left + side), round(top + side)


def overlay(image: Image.Image, heat: np.ndarray, crop_pct: float = 1.0) -> Image.Image:
    """``image`` (its own size) with ``heat`` (the model input's, in [0, 1]) coloured over the
    region the model saw; outside that region the image is left as it is."""
    box = crop_box(*image.size, crop_pct)
    size = (max(1, box[2] - box[0]), max(1, box[3] - box[1]))
    seen = Image.fromarray((heat * 255).astype(np.uint8)).resize(size, Image.BILINEAR)
    share = np.zeros((image.height, image.width), dtype=np.float32)
    left, top = max(0, box[0]), max(0, box[1])
    crop = np.asarray(seen, dtype=np.float32)[: image.height - top, : image.width - left] / 255
    share[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
    colours = colormaps["jet"](share)[..., :3] * 255  # (H, W, 3)
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    weight = ALPHA * share[..., None]  # cold regions stay as they are, hot ones take the colour
    return Image.fromarray((pixels * (1 - weight) + colours * weight).clip(0, 255).astype(np.uint8))
