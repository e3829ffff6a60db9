"""Where the model looks: Grad-CAM class-activation maps (Selvaraju et al., ICCV 2017) through captum.

captum (PyTorch's own interpretability library) computes them: ``LayerGradCam`` weighs the
feature map of a layer by the gradient of the class score and keeps the positive part. It is
chosen over pytorch-grad-cam, which needs OpenCV for its resizing; captum needs only torch.
The layer is the deepest feature stage timm describes (``feature_info``: ConvNeXt's ``stages.3``,
ResNet's ``layer4``) whose map at the input size is at least 4 x 4 cells (at 224 px the last
stage, 7 x 7; at 32 px a 1 x 1 last stage would colour the whole image alike, so an earlier one),
so nothing is typed per architecture. A stage whose map is channels-last, (N, H, W, C) (MambaOut,
Swin, Sequencer: timm's ``output_fmt`` NHWC, or the stage's channel count last), is read through a
tap that presents it as (N, C, H, W); a stage that is not a map at all (a vision transformer's
tokens) is refused, naming why.
``overlay`` lays the map over the original image where the validation transform's centre crop
took it from, so the picture has the image's own size, up to ``OVERLAY_SIDE`` pixels a side
(larger images are shown scaled down, so one huge image needs no huge memory) and at least
``OVERLAY_SHORT`` on the shorter side (smaller ones are enlarged, pixels kept sharp).
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
OVERLAY_SIDE = 2048  # pixels: an overlay's longer side at most
OVERLAY_SHORT = 128  # pixels: its shorter side at least (a smaller image is enlarged, to be seen)


class Tap(nn.Module):
    """Where captum watches a channels-last stage: its map as (N, C, H, W), unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def feature_stage(model: nn.Module, image_size: int, name: str = "model") -> tuple[dict, nn.Module]:
    """The deepest feature stage of a timm model (its ``feature_info`` entry and module) with a map
    of at least MIN_CELLS cells a side at ``image_size`` (else the first stage); UserError if it
    has none."""
    for module in model.modules():
        info = getattr(module, "feature_info", None)
        if info:
            stages = info if isinstance(info, list) else info.get_dicts()
            fine = [s for s in stages if image_size // s.get("reduction", 1) >= MIN_CELLS] or stages[:1]
            return fine[-1], module.get_submodule(fine[-1]["module"])
    raise UserError(f"cam=true: {name} describes no feature stages (timm's feature_info), so no map to show.")


class ClassActivationMaps:
    """Grad-CAM maps of ``model`` for the classes it is asked about, at the input's resolution."""

    def __init__(self, model: nn.Module, image_size: int, name: str = "model") -> None:
        from captum.attr import LayerGradCam

        self.model, self.name = model, name
        stage, self.layer = feature_stage(model, image_size, name)
        self.layer_name, self.channels = stage["module"], stage.get("num_chs")
        self.nhwc = getattr(model, "output_fmt", "NCHW") == "NHWC"
        self.cells: tuple[int, int] | None = None  # the map's height and width, once checked
        self.gradcam = LayerGradCam(model, self.layer)

    def check(self, image_size: int, device: torch.device) -> None:
        """Read the stage's layout from one blank image; refuse, before any image is read, a model
        whose stage is no map (N, C, H, W) or (N, H, W, C)."""
        from captum.attr import LayerGradCam

        shapes: list[torch.Size] = []
        hook = self.layer.register_forward_hook(lambda _m, _i, out: shapes.append(out.shape))
        try:
            with torch.no_grad():
                self.model(torch.zeros(1, 3, image_size, image_size, device=device))
        finally:
            hook.remove()
        shape = shapes[0]
        if len(shape) != 4:
            raise UserError(
                f"cam=true: the feature stage {self.layer_name} of {self.name} gives {tuple(shape)}, "
                f"not a map (N, C, H, W) (a transformer's tokens): class-activation maps need a "
                f"convolutional model."
            )
        if shape[1] != shape[3] and self.channels in (shape[1], shape[3]):  # the channels tell
            self.nhwc = shape[3] == self.channels
        self.cells = (shape[1], shape[2]) if self.nhwc else (shape[2], shape[3])
        if self.nhwc:  # captum weighs dimension 1 as the channels: it watches the map turned round
            tap = Tap()
            self.layer.register_forward_hook(
                lambda _m, _i, out: tap(out.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            )
            self.gradcam = LayerGradCam(self.model, tap)

    def describe(self) -> str:
        """Which layer the maps come from, and how fine they are."""
        assert self.cells is not None, "check() first"
        return f"Grad-CAM of {self.layer_name}, a {self.cells[0]} x {self.cells[1]} map"

    def maps(self, images: torch.Tensor, classes: torch.Tensor) -> np.ndarray:
        """(N, H, W) maps in [0, 1], one per image for its class in ``classes``."""
        from captum.attr import LayerAttribution

        if self.cells is None:
            self.check(images.shape[-1], images.device)

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
    """``image`` (its own size, within ``OVERLAY_SHORT`` and ``OVERLAY_SIDE`` pixels a side) with
    ``heat`` (the model input's, in [0, 1]) coloured over the region the model saw; outside that
    region the image is left as it is."""
    if max(image.size) > OVERLAY_SIDE:
        image = image.copy()
        image.thumbnail((OVERLAY_SIDE, OVERLAY_SIDE))
    elif min(image.size) < OVERLAY_SHORT:  # an 8-pixel image's overlay would be 8 pixels
        scale = OVERLAY_SHORT / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.NEAREST)
    box = crop_box(*image.size, crop_pct)
    size = (max(1, box[2] - box[0]), max(1, box[3] - box[1]))
    seen = Image.fromarray((heat * 255).astype(np.uint8)).resize(size, Image.BILINEAR)
    share = np.zeros((image.height, image.width), dtype=np.float32)
    left, top = max(0, box[0]), max(0, box[1])
    crop = np.asarray(seen, dtype=np.float32)[: image.height - top, : image.width - left] / 255
    share[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
    colours = colormaps["jet"](share, bytes=True)[..., :3].astype(np.float32)  # (H, W, 3)
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    weight = ALPHA * share[..., None]  # cold regions stay as they are, hot ones take the colour
    return Image.fromarray((pixels * (1 - weight) + colours * weight).clip(0, 255).astype(np.uint8))
