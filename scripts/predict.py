"""Classify new images with a checkpoint; one CSV row per readable image.

    python scripts/predict.py checkpoint=RUN/checkpoints/best.pt input=IMAGE_OR_DIR
                              [output=FILE.csv] [topk=3] [ema=false] [logit_adjust=0]
                              [batch_size=32] [device=auto]
    python scripts/predict.py checkpoint=RUN/checkpoints/best.pt split=valid|test

``input`` is one image or a folder (searched recursively); ``split`` takes the run's own
validation or test images instead. The CSV goes to ``output``, by default
``RUN/predictions/<input's name>.csv`` in the checkpoint's run folder (``split-valid.csv`` for a
split); the first predictions are printed too (a tree's or a label file's, the carved split included). Each
row: path, predicted class, its probability, then the top-k classes with their probabilities
(``topk`` unset: 3, or every class when there are fewer). Where the true class is known (an
image under a folder named as a class, or ``split``), the row also has ``true`` and ``correct``,
the CSV doubles as an error list, and a per-class summary (images, recall, the most frequent
wrong prediction) is printed and written beside it as ``<output>_summary.csv``. ``cam=true``
writes, for each image, where the model looked for the class it predicted (Grad-CAM through
captum, trainer/evaluation/cam.py) over the image at its own size (up to 2,048 pixels a side)
into ``<output>_cam/``, named in a ``cam`` column. Files that cannot be read
as images are reported by name and skipped, never fatal. The CSV is UTF-8 and appears whole
or not at all; names that are not UTF-8 or hold control characters are escaped (``\\xNN``,
``\\n``). Images get the run's validation transform (resize, centre crop, normalisation).
``logit_adjust=TAU`` predicts with post-hoc logit adjustment (Menon et al., ICLR 2021):
probabilities are softmax(z - TAU * log prior), the prior from the checkpoint's training
counts, i.e. what the model would say if every class were equally common; 1.0 is the usual
choice for a model trained with plain cross-entropy. ``tau_norm=TAU`` predicts with the
classifier's rows divided by their norms to the power TAU (tau-normalisation, Kang et al., ICLR
2020; then with temperature 1). Probabilities are softmax(z / T) with the
temperature that ``evaluate.py calibrate=true`` stored in the checkpoint (1 if none). A cell
that a spreadsheet would run as a formula (starting with ``= + - @``, a tab or a carriage
return: a path or class name) is written with a leading apostrophe, as OWASP advises.
"""

from __future__ import annotations

import common.startup_signals  # noqa: F401  # isort: skip  (first: a Ctrl-C while libraries load)
import csv
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf

from common.errors import UserError
from common.run_folder import RunFolder
from data.names import shortened

from lib.app import output_folder, parse_settings, run_app


@dataclass
class PredictSettings:
    checkpoint: str = MISSING  # a checkpoint of train.py, e.g. RUN/checkpoints/best.pt
    input: str = ""  # an image, or a folder searched recursively (or give split)
    output: str = ""  # the CSV; "": RUN/predictions/<input's name>.csv beside the checkpoint's run
    topk: int | None = None  # classes per row with their probabilities; null: 3, or all if fewer
    ema: bool = False  # predict with the EMA weights
    logit_adjust: float = 0.0  # tau of post-hoc logit adjustment; 0: off
    tau_norm: float = 0.0  # tau-normalisation of the classifier's rows (Kang et al. 2020); 0: off
    batch_size: int = 32
    device: str = "auto"  # auto | cpu | cuda
    split: str | None = None  # valid | test: the run's own images of that split instead of input
    cam: bool = False  # a class-activation map of the predicted class over each image, in <output>_cam/


SHOWN = 10  # predictions printed; every one is in the CSV


def default_output(cfg: PredictSettings) -> Path:
    """``RUN/predictions/<name>.csv`` of the checkpoint's run (its own folder for a file outside a
    run): named after the input (``photos.csv``) or the split (``split-valid.csv``)."""
    checkpoint = Path(cfg.checkpoint)
    run = RunFolder.of_checkpoint(checkpoint) or RunFolder(checkpoint.parent)
    name = f"split-{cfg.split}" if cfg.split else (Path(cfg.input).resolve().stem or "input")
    return run.predictions(name)


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


def folder_truth(path: Path, top: Path, names: list[str], display: Any) -> str | None:
    """The true class of an image under ``top``: its nearest folder named as a class (as the run
    shows folder names: ``display``, so RAF-DB's ``4`` is happiness), or None."""
    parts = path.relative_to(top).parts[:-1] if path != top else ()
    for part in reversed(parts):
        shown = display([part])[0]
        if shown in names:
            return shown
    return None


def summary_rows(rows: list[dict], names: list[str]) -> list[dict]:
    """Per true class: images, correctly predicted, recall, and the most frequent wrong prediction."""
    out = []
    for name in names:
        mine = [r for r in rows if r.get("true") == cell(name)]
        if not mine:
            continue
        wrong = Counter(r["prediction"] for r in mine if r["correct"] == "0")
        top_wrong = wrong.most_common(1)
        out.append(
            {
                "class": cell(name),
                "images": len(mine),
                "correct": len(mine) - sum(wrong.values()),
                "recall": f"{(len(mine) - sum(wrong.values())) / len(mine):.4f}",
                "most_often_predicted_instead": f"{top_wrong[0][0]} ({top_wrong[0][1]})" if top_wrong else "",
            }
        )
    return out


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    from common.atomic import atomic_open

    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def predict(args: PredictSettings | Mapping[str, Any]) -> list[dict]:
    """Predict as the command line would with these settings (a mapping is typed like it)."""
    cfg = parse_settings(PredictSettings, args, "predict")
    # the libraries load once the settings pass: --help and a mistake answer in about a second
    import torch

    from data.images import READ_ERRORS, load_rgb
    from data.names import printable
    from data.transforms import build_transform
    from trainer.checkpoint import load_checkpoint

    from lib.runs import (
        check_tau_norm,
        dataset_settings,
        deployed_model,
        device_and_amp,
        logit_adjustment,
        recorded_split,
    )

    state = load_checkpoint(cfg.checkpoint, key="checkpoint")
    names = state["class_names"]
    topk = min(3, len(names)) if cfg.topk is None else cfg.topk
    if cfg.batch_size < 1:
        raise UserError(f"batch_size={cfg.batch_size} must be a positive integer.")
    adjust = logit_adjustment(state, cfg.logit_adjust)
    output = Path(cfg.output) if cfg.output else default_output(cfg)
    output_folder(output.parent, "output", str(output))
    if not 1 <= topk <= len(names):
        raise UserError(f"topk={topk} must lie between 1 and the number of classes ({len(names)}).")
    ema, batch_size = cfg.ema, cfg.batch_size
    settings = dataset_settings(state, {})
    recorded = recorded_split(state, cfg.checkpoint)
    inputs, truth = inputs_and_truth(cfg, OmegaConf.to_object(settings), names, recorded)
    if not inputs:
        raise UserError(
            f"input={cfg.input!r} holds no file: nothing to classify. Give an image or a folder of images."
        )
    transform = build_transform(settings, is_training=False)
    device, amp_dtype = device_and_amp(state, cfg.device)
    model = deployed_model(state, ema, adjust, device, check_tau_norm(cfg.tau_norm))
    cams, cam_dir = None, output.with_name(f"{output.stem}_cam")
    if cfg.cam:
        from trainer.evaluation.cam import OVERLAY_SIDE, ClassActivationMaps, overlay
        from trainer.evaluation.gallery import save_png

        cams = ClassActivationMaps(model.model, settings.image_size, state["config"]["model"]["name"])
        cams.check(settings.image_size, device)
        print(f"cam=true: {cams.describe()} over each image, in {cam_dir}")
        cam_dir.mkdir(parents=True, exist_ok=True)
    rows, batch, paths = [], [], []

    def flush() -> None:
        images = torch.stack(batch).to(device)
        with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images).float()  # (N, C): z / T - tau * log prior
        probs = logits.softmax(dim=1)
        top_p, top_i = probs.topk(topk, dim=1)
        heat = cams.maps(images, top_i[:, 0]) if cams is not None else [None] * len(paths)
        for path, p, i, h in zip(paths, top_p.tolist(), top_i.tolist(), heat, strict=True):
            row = {
                "path": cell(printable(str(path))),
                "prediction": cell(names[i[0]]),
                "probability": f"{p[0]:.6f}",
            }
            if truth:
                known = truth.get(path)
                row["true"] = cell(known) if known is not None else ""
                row["correct"] = "" if known is None else str(int(known == names[i[0]]))
            for k in range(topk):
                row[f"top{k + 1}"], row[f"top{k + 1}_probability"] = cell(names[i[k]]), f"{p[k]:.6f}"
            if h is not None:  # the class-activation map of the predicted class, over the image
                target = cam_dir / f"{len(rows):05d}_{path.stem}.png"
                try:  # decoded at no more than the overlay's size where the format allows (JPEG)
                    image = load_rgb(str(path), target_size=OVERLAY_SIDE // 2, max_pixels=None)
                    save_png(overlay(image, h, settings.crop_pct), target)
                    row["cam"] = cell(printable(str(target)))
                except (*READ_ERRORS, MemoryError) as err:  # this image's picture only; its row stays
                    row["cam"] = ""
                    print(f"no overlay for {printable(str(path))} ({type(err).__name__})", file=sys.stderr)
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
    if not rows:
        raise UserError(
            f"input={cfg.input!r}: none of its {len(inputs)} file(s) is a readable image (each is named "
            f"above), so nothing was classified and no {output.name} was written."
        )
    columns = ["path", "prediction", "probability"] + (["true", "correct"] if truth else [])
    columns += ["cam"] if cfg.cam else []
    columns += [c for k in range(1, topk + 1) for c in (f"top{k}", f"top{k}_probability")]
    write_csv(output, rows, columns)
    for row in rows[:SHOWN]:
        print(f"{row['path']}: {row['prediction']} (probability {float(row['probability']):.3f})")
    more = f" ({len(rows) - SHOWN} more than shown)" if len(rows) > SHOWN else ""
    print(f"{len(rows)} image(s) classified into {output}{more}")
    if truth:
        per_class = summary_rows(rows, names)
        summary = output.with_name(f"{output.stem}_summary.csv")
        write_csv(summary, per_class, list(per_class[0]) if per_class else ["class"])
        print(summary_table(per_class, rows))
        print(f"per-class summary in {summary}")
    return rows


def summary_table(per_class: list[dict], rows: list[dict]) -> str:
    """The per-class summary as the console shows it: recall per true class, worst first."""
    known = [r for r in rows if r.get("correct")]
    right = sum(r["correct"] == "1" for r in known)
    lines = [f"{len(known)} image(s) with a known class: {right} right ({right / max(1, len(known)):.1%})"]
    width = min(30, max([len(shortened(r["class"], 30)) for r in per_class] + [5]))
    lines.append(f"{'class':<{width}} {'images':>6} {'recall':>7}  most often predicted instead")
    for r in sorted(per_class, key=lambda r: float(r["recall"])):
        name = shortened(r["class"], 30)
        instead = r["most_often_predicted_instead"]
        lines.append(f"{name:<{width}} {r['images']:>6} {float(r['recall']):>7.1%}  {instead}")
    return "\n".join(lines)


def inputs_and_truth(
    cfg: PredictSettings, settings: Any, names: list[str], recorded: Any = None
) -> tuple[list[Path], dict]:
    """The images to classify and the true class of those whose class is known; ``split=valid``
    reads the run's own validation images (``recorded``: as its carved split recorded them)."""
    if cfg.split is not None:
        from data.loaders import ImageData

        from lib.runs import quiet_training_choices

        if cfg.split not in ("valid", "test"):
            raise UserError(f"split={cfg.split!r} is not one of: valid, test.")
        if cfg.input:
            raise UserError(f"input={cfg.input!r} and split={cfg.split}: give one of them.")
        with quiet_training_choices():
            data = ImageData(settings, splits=(cfg.split,), recorded=recorded)
        dataset = data.evaluated(cfg.split)
        if dataset is None:
            raise UserError(f"split={cfg.split}: the run has no {cfg.split} split.")
        shown = data.class_names
        return [Path(p) for p, _ in dataset.samples], {Path(p): shown[c] for p, c in dataset.samples}
    if not cfg.input:
        raise UserError("give input=IMAGE_OR_DIR (or split=valid|test: the run's own images).")
    top = Path(cfg.input)
    inputs = list_inputs(top)
    found = {path: folder_truth(path, top, names, settings.display_names) for path in inputs}
    truth = {path: name for path, name in found.items() if name is not None}
    return inputs, truth


if __name__ == "__main__":
    run_app(predict, PredictSettings, "predict", __doc__)
