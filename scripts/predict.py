"""Classify new images with a checkpoint; one CSV row per readable image.

    python scripts/predict.py checkpoint=RUN/checkpoints/best.pt input=IMAGE_OR_DIR
                              [output=predictions.csv] [topk=3] [ema=false] [logit_adjust=0]
                              [batch_size=32] [device=auto]

``input`` is one image or a folder (searched recursively). Each row: path, predicted class,
its probability, then the top-k classes with their probabilities (``topk`` unset: 3, or every
class when there are fewer). Files that cannot be read
as images are reported by name and skipped, never fatal. The CSV is UTF-8 and appears whole
or not at all; names that are not UTF-8 or hold control characters are escaped (``\\xNN``,
``\\n``). Images get the run's validation transform (resize, centre crop, normalisation).
``logit_adjust=TAU`` predicts with post-hoc logit adjustment (Menon et al., ICLR 2021):
probabilities are softmax(z - TAU * log prior), the prior from the checkpoint's training
counts, i.e. what the model would say if every class were equally common; 1.0 is the usual
choice for a model trained with plain cross-entropy. Probabilities are softmax(z / T) with the
temperature that ``evaluate.py calibrate=true`` stored in the checkpoint (1 if none). A cell
that a spreadsheet would run as a formula (starting with ``= + - @``, a tab or a carriage
return: a path or class name) is written with a leading apostrophe, as OWASP advises.
"""

from __future__ import annotations

import common.startup_signals  # noqa: F401  # isort: skip  (first: a Ctrl-C while libraries load)
import csv
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from common.errors import UserError

from lib.app import output_folder, parse_settings, run_app


@dataclass
class PredictSettings:
    checkpoint: str = MISSING  # a checkpoint of train.py, e.g. RUN/checkpoints/best.pt
    input: str = MISSING  # an image, or a folder searched recursively
    output: str = "predictions.csv"
    topk: int | None = None  # classes per row with their probabilities; null: 3, or all if fewer
    ema: bool = False  # predict with the EMA weights
    logit_adjust: float = 0.0  # tau of post-hoc logit adjustment; 0: off
    batch_size: int = 32
    device: str = "auto"  # auto | cpu | cuda


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run as a formula (OWASP)


def cell(text: str) -> str:
    """A CSV cell that a spreadsheet shows as text: one that would start a formula gets a leading
    apostrophe (OWASP's advice against CSV injection), so a class named ``=cmd|...`` is never run."""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def list_inputs(path: Path) -> list[Path]:
    from data.images import is_hidden

    if path.is_file():
        return [path]
    if path.is_dir():
        found = (p for p in path.rglob("*") if p.is_file())
        return sorted(p for p in found if not any(is_hidden(part) for part in p.relative_to(path).parts))
    raise UserError(f"input={str(path)!r} is neither an image file nor a folder.")


def predict(args: PredictSettings | Mapping[str, Any]) -> list[dict]:
    """Predict as the command line would with these settings (a mapping is typed like it)."""
    cfg = parse_settings(PredictSettings, args, "predict")
    # the libraries load once the settings pass: --help and a mistake answer in about a second
    import torch

    from data.images import READ_ERRORS, load_rgb
    from data.names import printable
    from data.transforms import build_transform
    from trainer.atomic import atomic_open
    from trainer.checkpoint import load_checkpoint

    from lib.runs import dataset_settings, deployed_model, device_and_amp, logit_adjustment

    state = load_checkpoint(cfg.checkpoint, key="checkpoint")
    names = state["class_names"]
    topk = min(3, len(names)) if cfg.topk is None else cfg.topk
    if cfg.batch_size < 1:
        raise UserError(f"batch_size={cfg.batch_size} must be a positive integer.")
    adjust = logit_adjustment(state, cfg.logit_adjust)
    output = Path(cfg.output)
    output_folder(output.parent, "output", cfg.output)
    if not 1 <= topk <= len(names):
        raise UserError(f"topk={topk} must lie between 1 and the number of classes ({len(names)}).")
    ema, batch_size = cfg.ema, cfg.batch_size
    inputs = list_inputs(Path(cfg.input))
    settings = dataset_settings(state, {})
    transform = build_transform(settings, is_training=False)
    device, amp_dtype = device_and_amp(state, cfg.device)
    model = deployed_model(state, ema, adjust, device)
    rows, batch, paths = [], [], []

    def flush() -> None:
        images = torch.stack(batch).to(device)
        with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images).float()  # (N, C): z / T - tau * log prior
        probs = logits.softmax(dim=1)
        top_p, top_i = probs.topk(topk, dim=1)
        for path, p, i in zip(paths, top_p.tolist(), top_i.tolist(), strict=True):
            row = {
                "path": cell(printable(str(path))),
                "prediction": cell(names[i[0]]),
                "probability": f"{p[0]:.6f}",
            }
            for k in range(topk):
                row[f"top{k + 1}"], row[f"top{k + 1}_probability"] = cell(names[i[k]]), f"{p[k]:.6f}"
            rows.append(row)
        batch.clear()
        paths.clear()

    for path in inputs:
        try:
            image = load_rgb(str(path), target_size=settings.image_size, max_pixels=settings.max_image_pixels)
        except READ_ERRORS as err:
            reason = type(err).__name__
            print(f"skipped {printable(str(path))}: not a readable image ({reason})", file=sys.stderr)
            continue
        batch.append(transform(image))
        paths.append(path)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    columns = ["path", "prediction", "probability"]
    columns += [c for k in range(1, topk + 1) for c in (f"top{k}", f"top{k}_probability")]
    with atomic_open(output, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} image(s) classified into {cfg.output}")
    return rows


if __name__ == "__main__":
    run_app(predict, PredictSettings, "predict", __doc__)
