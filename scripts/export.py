"""Export a checkpoint's model to ONNX or TorchScript, check it against PyTorch, document its input.

    python scripts/export.py checkpoint=RUN/checkpoints/best.pt format=onnx|torchscript output=FILE
                             [ema=false] [logit_adjust=0] [tau_norm=0] [opset=18]

The exported model takes a float32 batch (N, 3, H, W) of RGB images resized and normalised as
in validation, and returns logits (N, C); ``FILE.json`` beside it records that preprocessing
(size, crop, interpolation, mean, std) and the class names. After exporting, the file is run
on a sample batch and compared with the PyTorch model: it must agree within 1e-4.
``logit_adjust=TAU`` bakes post-hoc logit adjustment (Menon et al., ICLR 2021) into the file:
it returns z - TAU * log prior (the prior from the checkpoint's training counts), whose argmax
and softmax are the balanced predictions. ``tau_norm=TAU`` bakes tau-normalisation (Kang et al.,
ICLR 2020) in: the classifier's rows divided by their norms to the power TAU. A temperature
that ``evaluate.py calibrate=true`` stored in the checkpoint is inside the file too (the logits
are z / T; 1 with tau_norm), so softmax of the output is the calibrated probability; the JSON
records it.
"""

from __future__ import annotations

import common.startup_signals  # noqa: F401  # isort: skip  (first: a Ctrl-C while libraries load)
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import MISSING

from common.errors import UserError

from lib.app import output_folder, parse_settings, run_app

if TYPE_CHECKING:  # loaded once the settings pass: --help and a mistake answer in about a second
    import numpy as np
    import torch


@dataclass
class ExportSettings:
    checkpoint: str = MISSING  # a checkpoint of train.py, e.g. RUN/checkpoints/best.pt
    format: str = MISSING  # onnx | torchscript
    output: str = MISSING  # the model file; FILE.json beside it
    ema: bool = False  # export the EMA weights
    logit_adjust: float = 0.0  # tau of post-hoc logit adjustment baked into the file; 0: off
    tau_norm: float = 0.0  # tau-normalisation of the classifier baked into the file; 0: off
    opset: int = 18  # ONNX opset


TOLERANCE = 1e-4


def export_onnx(model: torch.nn.Module, sample: torch.Tensor, path: Path, opset: int) -> np.ndarray:
    """Write ONNX with a dynamic batch axis; return its outputs for ``sample`` (onnxruntime)."""
    import onnxruntime
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        model,
        (sample,),
        str(path),
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        opset_version=opset,
        external_data=False,
        dynamo=True,
    )
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own error types; its message says what it lacks
        raise UserError(
            f"opset={opset}: onnxruntime cannot run the exported graph ({str(err).splitlines()[0][:300]}). "
            f"Use the default opset=18 or another this onnxruntime supports."
        ) from None
    return session.run(None, {"images": sample.numpy()})[0]


def export_torchscript(model: torch.nn.Module, sample: torch.Tensor, path: Path) -> np.ndarray:
    """Write a traced TorchScript module; return its outputs for ``sample`` after reloading it."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", DeprecationWarning
        )  # tracing is deprecated, still the portable format
        torch.jit.save(torch.jit.trace(model, sample), str(path))
        return torch.jit.load(str(path)).eval()(sample).detach().numpy()


def export(args: ExportSettings | Mapping[str, Any]) -> dict:
    """Export as the command line would with these settings (a mapping is typed like it)."""
    cfg = parse_settings(ExportSettings, args, "export")
    import numpy as np
    import torch

    from common.atomic import atomic_open, atomic_path
    from trainer.checkpoint import load_checkpoint

    from lib.runs import check_tau_norm, dataset_settings, deployed_model, logit_adjustment

    if cfg.format not in ("onnx", "torchscript"):
        raise UserError(f"format={cfg.format!r} is not one of: onnx, torchscript.")
    if cfg.opset < 1:
        raise UserError(f"opset={cfg.opset} must be a positive integer.")
    if cfg.format == "onnx":  # an opset the onnx package does not know: refused before exporting
        import onnx

        newest = onnx.defs.onnx_opset_version()
        if cfg.opset > newest:
            raise UserError(
                f"opset={cfg.opset} is newer than this onnx package knows (at most {newest}). Use the "
                f"default opset=18 or another this onnxruntime supports."
            )
    opset, ema = cfg.opset, cfg.ema
    path = Path(cfg.output)
    output_folder(path.parent, "output", cfg.output)
    state = load_checkpoint(cfg.checkpoint, key="checkpoint")
    adjust = logit_adjustment(state, cfg.logit_adjust)
    model = deployed_model(state, ema, adjust, torch.device("cpu"), check_tau_norm(cfg.tau_norm))
    settings = dataset_settings(state, {})
    sample = torch.randn(
        4, 3, settings.image_size, settings.image_size, generator=torch.Generator().manual_seed(0)
    )
    # written under a temporary name and checked there: a failed export leaves no file behind
    with torch.no_grad(), atomic_path(path) as tmp:
        expected = model(sample).numpy()
        if cfg.format == "onnx":
            got = export_onnx(model, sample, tmp, opset)
        else:
            got = export_torchscript(model, sample, tmp)
        diff = float(np.abs(got - expected).max())
        if not diff <= TOLERANCE:
            raise UserError(
                f"The exported {cfg.format} model differs from PyTorch by {diff:.2e} (> {TOLERANCE})."
            )
    info = {
        "checkpoint": str(Path(cfg.checkpoint).resolve()),
        "epoch": state["epoch"],
        "weights": "ema" if ema else "model",  # the EMA's average, or the trained weights themselves
        "monitor": state.get("monitor"),
        "best_metric": state.get("best_metric"),
        "format": cfg.format,
        "input": "float32 (N, 3, H, W), RGB, values normalised as (x / 255 - mean) / std",
        "output": "logits (N, C); softmax over C gives class probabilities",
        "temperature": model.temperature,  # inside the file: the logits are z / T
        "logit_adjust": adjust[1] if adjust else 0.0,
        "tau_norm": cfg.tau_norm,  # inside the file: the classifier's rows rescaled
        "image_size": settings.image_size,
        "resize": f"shorter side to image_size / crop_pct (crop_pct={settings.crop_pct}), centre crop",
        "interpolation": settings.interpolation,
        "mean": list(settings.mean),
        "std": list(settings.std),
        "class_names": state["class_names"],
        "model": state["config"]["model"]["name"],
        "max_abs_difference_from_pytorch": diff,
    }
    with atomic_open(Path(f"{path}.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(info, indent=2, ensure_ascii=False))
    print(
        f"Exported {path} ({cfg.format}); matches PyTorch on a sample batch within {diff:.1e} "
        f"(limit {TOLERANCE}). Preprocessing and class names: {path}.json"
    )
    return info


if __name__ == "__main__":
    run_app(export, ExportSettings, "export", __doc__)
