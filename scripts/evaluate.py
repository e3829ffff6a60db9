"""Evaluate a checkpoint: overall, balanced and per-class accuracy, macro-F1, confusion matrix.

    python scripts/evaluate.py checkpoint=RUN/checkpoints/best.pt [output_dir=DIR] [ema=true]
                               [tta=flip] [logit_adjust=1.0] [calibrate=true] [device=auto]
                               [split=valid|test] [cam=true] [dataset.root=DIR] ...

Uses the checkpoint's own dataset settings unless ``dataset.*`` overrides say otherwise; a
folder of class sub-folders without splits is ``dataset.root=DIR dataset.train_dir=. dataset.val_dir=.``.
Prints what it evaluates (checkpoint, epoch, weights, tau, temperature, data, images), a table,
and writes ``metrics.json`` and ``confusion_matrix.png`` into ``output_dir``, by default
``RUN/evaluations/<what was evaluated>`` (``best-epoch7-ema-tau1``); a folder that holds an
earlier evaluation's results is refused unless ``overwrite=true``. ``split=test`` evaluates the
run's held-out test split (``dataset.test_dir``, or a label file's test rows) instead. On the
validation data a run monitored, it reproduces the checkpoint's ``best_metric``: the same
weights, transforms, precision and metric code.
Accuracy is also reported over many-, medium- and few-shot classes (by the training counts
the checkpoint records). ``logit_adjust=TAU`` evaluates post-hoc logit adjustment (Menon et
al., ICLR 2021): predictions argmax(z - TAU * log prior), the prior from those counts.
``tau_norm=TAU`` evaluates tau-normalisation (Kang et al., ICLR 2020): each class's classifier
row divided by its norm to the power TAU (1 equalises them), no training; with it the temperature
is 1 (a calibrated one was fitted to the classifier as trained).

Probabilities are softmax(z / T) with the temperature T the checkpoint records (1 if it was
never calibrated); ``loss`` and ``ece`` (expected calibration error) measure them.
``calibrate=true`` fits T on this data (temperature scaling, trainer/evaluation/calibration.py),
reports the loss and ECE before and after (cross-fitted), and stores T in the checkpoint,
rewritten whole or not at all (and says so), for predict.py, export.py and later evaluations.
"""

from __future__ import annotations

import common.startup_signals  # noqa: F401  # isort: skip  (first: a Ctrl-C while libraries load)
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import MISSING, OmegaConf

from common.errors import UserError
from common.run_folder import RunFolder

from lib.app import DatasetOverrides, output_folder, parse_settings, run_app

if TYPE_CHECKING:
    from data.loaders import ImageData


@dataclass
class EvaluateSettings:
    checkpoint: str = MISSING  # a checkpoint of train.py, e.g. RUN/checkpoints/best.pt
    # where metrics.json and confusion_matrix.png go; "": RUN/evaluations/<what was evaluated>
    output_dir: str = ""
    overwrite: bool = False  # replace the results an earlier evaluation left in that folder
    ema: bool = False  # evaluate the EMA weights
    tta: str = "none"  # none | flip: average each image with its mirror
    logit_adjust: float = 0.0  # tau of post-hoc logit adjustment; 0: off
    tau_norm: float = 0.0  # tau-normalisation of the classifier's rows (Kang et al. 2020); 0: off
    calibrate: bool = False  # fit a temperature on this data and store it in the checkpoint
    device: str = "auto"  # auto | cpu | cuda
    split: str = "valid"  # valid | test: the run's held-out test split (dataset.test_dir, test rows)
    cam: bool = False  # errors.png shows where the model looked (class-activation maps) over each image
    dataset: DatasetOverrides = field(default_factory=DatasetOverrides)  # e.g. dataset.root=DIR


def what_was_evaluated(
    checkpoint: Path,
    state: dict,
    ema: bool,
    tau: float,
    tta: str,
    temperature: float,
    data: str | None,
    tau_norm: float = 0.0,
) -> str:
    """The default output folder's name: ``best-epoch7-ema-tau1-flip-T1.84-on-faces``."""
    parts = [f"{checkpoint.stem}-epoch{state.get('epoch', 0)}"]
    parts += ["ema"] if ema else []
    parts += [f"tau{tau:g}"] if tau else []
    parts += [f"taunorm{tau_norm:g}"] if tau_norm else []
    parts += ["flip"] if tta == "flip" else []
    parts += [f"T{temperature:.3g}"] if temperature != 1.0 else []
    parts += [f"on-{data}"] if data else []
    return "-".join(parts)


def split_name(split: str) -> str:
    """The folder-name part of the split evaluated: none for validation, ``-test`` for the test split."""
    return "-test" if split == "test" else ""


def header(cfg: EvaluateSettings, state: dict, data: ImageData, temperature: float, images: int) -> str:
    """What is evaluated, in two lines: the checkpoint and its epoch; the weights, adjustments, data."""
    epoch, config = state.get("epoch"), state.get("config") or {}
    total = (config.get("trainer") or {}).get("epochs")
    best = state.get("best_metric")
    monitor = state.get("monitor") or (config.get("trainer") or {}).get("monitor", "")
    best_text = f", best {monitor} {best:.4f} at epoch {state.get('best_epoch')}" if best is not None else ""
    return (
        f"Evaluating {cfg.checkpoint}: epoch {epoch}{f' of {total}' if total else ''}{best_text}\n"
        f"{adjustments(cfg, temperature)}; "
        f"data: {data.source(cfg.split)}{' (test split)' if cfg.split == 'test' else ''}, "
        f"{images} images of {len(data.class_names)} classes"
    )


def adjustments(cfg: EvaluateSettings, temperature: float) -> str:
    """The weights and what changes their predictions: ``EMA, tau 1, T 1.84, flip TTA``."""
    calibrated = f"T {temperature:.3g} (calibrated)" if temperature != 1.0 else "T 1 (not calibrated)"
    tau = f"post-hoc tau {cfg.logit_adjust:g}" if cfg.logit_adjust else "no post-hoc adjustment"
    tta = "flip TTA" if cfg.tta == "flip" else "no TTA"
    norm = f"tau-norm {cfg.tau_norm:g}, " if cfg.tau_norm else ""
    return f"{'EMA' if cfg.ema else 'raw'} weights, {norm}{tau}, {calibrated}, {tta}"


def results_folder(cfg: EvaluateSettings, name: str) -> Path:
    """The folder for this evaluation's files, made now; a UserError if it holds earlier results."""
    run = RunFolder.of_checkpoint(cfg.checkpoint) or RunFolder(Path(cfg.checkpoint).parent.parent)
    folder = Path(cfg.output_dir) if cfg.output_dir else run.evaluation(name)
    out = output_folder(folder, "output_dir", cfg.output_dir or str(folder))
    if RunFolder(out).metrics_json.exists() and not cfg.overwrite:
        raise UserError(
            f"{out} already holds the results of an evaluation (metrics.json). Add overwrite=true to "
            f"replace them, or give another output_dir=DIR."
        )
    return out


def evaluate(args: EvaluateSettings | Mapping[str, Any]) -> dict:
    """Evaluate as the command line would with these settings (a mapping is typed like it)."""
    cfg = parse_settings(EvaluateSettings, args, "evaluate")
    # the libraries load once the settings pass: --help and a mistake answer in about a second
    import torch

    from common.atomic import atomic_open
    from data.loaders import ImageData
    from trainer.checkpoint import load_checkpoint, save_checkpoint
    from trainer.evaluation.calibration import calibrate, temperature_of
    from trainer.evaluation.gallery import Predictions, gallery_picture, save_png
    from trainer.evaluation.metrics import ClassificationMetrics, forward_batches
    from trainer.evaluation.reports import evaluation_record, metrics_table, save_confusion_png, tidy

    from lib.runs import (
        check_tau_norm,
        dataset_settings,
        deployed_model,
        device_and_amp,
        logit_adjustment,
        quiet_training_choices,
        recorded_split,
        shot_thresholds,
    )

    ema, fit = cfg.ema, cfg.calibrate
    if cfg.tta not in ("none", "flip"):
        raise UserError(f"tta={cfg.tta!r} is not one of: none, flip.")
    if cfg.split not in ("valid", "test"):
        raise UserError(f"split={cfg.split!r} is not one of: valid, test.")
    if cfg.output_dir:
        output_folder(Path(cfg.output_dir), "output_dir", cfg.output_dir)
    state = load_checkpoint(cfg.checkpoint, key="checkpoint")
    trained_hflip = ((state.get("config") or {}).get("dataset") or {}).get("hflip")
    if cfg.tta == "flip" and trained_hflip == 0:  # a mirrored 2 is not a 2
        print(
            "warning: tta=flip averages each image with its mirror, but this model was trained without "
            "flips (dataset.hflip=0): to it a mirrored image may be another class, and the score may "
            "drop. Compare with tta=none.",
            file=sys.stderr,
        )
    adjust = logit_adjustment(state, cfg.logit_adjust)
    if check_tau_norm(cfg.tau_norm) and fit:
        raise UserError(
            f"calibrate=true with tau_norm={cfg.tau_norm:g}: the checkpoint keeps one temperature, for "
            f"its classifier as trained. Calibrate without tau_norm."
        )
    device, amp_dtype = device_and_amp(state, cfg.device)
    with quiet_training_choices():
        dataset = OmegaConf.to_object(dataset_settings(state, cfg.dataset))
        if cfg.split == "test" and getattr(dataset, "test_dir", "") is None:
            raise UserError(
                "split=test: the run has no test split. Give the held-out images with "
                "dataset.test_dir=DIR (a folder of class sub-folders under dataset.root)."
            )
        recorded = recorded_split(state, cfg.checkpoint, cfg.dataset)
        data = ImageData(dataset, splits=(cfg.split,), recorded=recorded)  # that split only
        if cfg.split == "test" and data.test_dataset is None:
            raise UserError(
                "split=test: the label files give no test rows (dataset.test_labels, or a split)."
            )
    if data.class_names != state["class_names"]:
        raise UserError(
            f"The evaluation data has classes {data.class_names}, but the checkpoint was trained on "
            f"{state['class_names']}. Point dataset.root at data with the same class folders."
        )
    metrics = ClassificationMetrics(
        len(data.class_names),
        device,
        class_counts=state.get("class_counts"),
        thresholds=shot_thresholds(state),
    )
    weights = "ema" if ema else "model"
    model = deployed_model(state, ema, adjust, device, cfg.tau_norm)
    paint, painted = cam_painter(model.model, state, data, device) if cfg.cam else (None, "")  # refused now
    flip = cfg.tta == "flip"
    evaluated = data.evaluated(cfg.split)
    print(header(cfg, state, data, model.temperature, len(evaluated)), flush=True)

    def own_logits(flip_tta: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The model's own logits (before temperature and adjustment), the labels and the images'
        dataset indices, in order."""
        loader = data.val_loader(split=cfg.split)
        logits, target, indices = [], [], []
        for batch, labels in forward_batches(model.model, loader, device, amp_dtype, flip_tta=flip_tta):
            logits.append(batch)
            target.append(labels)
            indices.append(loader.indices)
        return torch.cat(logits), torch.cat(target), torch.cat(indices)

    given = {k: v for k, v in vars(cfg.dataset).items() if v is not None}
    on = Path(data.root).name if given else None

    def folder(temperature: float) -> Path:  # refused before the checkpoint or any file is written
        name = what_was_evaluated(
            Path(cfg.checkpoint), state, ema, cfg.logit_adjust, cfg.tta, temperature, on, cfg.tau_norm
        )
        return results_folder(cfg, name + split_name(cfg.split))

    out = None if fit else folder(model.temperature)  # known before the forward pass
    logits, target, indices = own_logits(flip)
    rewritten = None
    if fit:  # T fitted to the logits predict.py sees: no TTA (a second pass only with it)
        plain = own_logits(False)[0] if flip else logits
        try:
            fitted = calibrate(plain.cpu(), target.cpu(), fitted_on=data.source(cfg.split))
        except ValueError as err:
            raise UserError(f"calibrate=true: {err}.") from None
        out = folder(fitted["temperature"])
        before = temperature_of(state, ema)
        linked = Path(cfg.checkpoint).stat().st_nlink > 1
        state.setdefault("calibration", {})[weights] = fitted
        save_checkpoint(state, Path(cfg.checkpoint))
        model.temperature = fitted["temperature"]
        rewritten = (before, linked)
    temperature = model.temperature
    metrics.reset()
    metrics.update(model.outputs(logits), target)
    results = metrics.compute()
    report = {
        "checkpoint": str(cfg.checkpoint),
        "epoch": state.get("epoch"),
        "ema": ema,
        "tta": cfg.tta,
        "logit_adjust": adjust[1] if adjust else 0.0,
        "tau_norm": cfg.tau_norm,
        "split": cfg.split,
        **evaluation_record(results, data.class_names, data.source(cfg.split)),
        "temperature": temperature,
        "calibration": state.get("calibration", {}).get(weights),
        "class_names": data.class_names,
        "output_dir": str(out),
    }
    with atomic_open(RunFolder(out).metrics_json, "w", encoding="utf-8") as f:
        f.write(json.dumps(tidy(report), indent=2, ensure_ascii=False))
    title = f"{Path(cfg.checkpoint).name}, epoch {state.get('epoch')}: {adjustments(cfg, temperature)}"
    save_confusion_png(results.confusion_matrix, data.class_names, str(out / "confusion_matrix.png"), title)
    predictions = Predictions(len(evaluated), torch.device("cpu"))
    predictions.add(indices, model.outputs(logits).cpu())
    gallery_title = f"{title}: each true class's most confident mistakes, lowest recall first; p: probability"
    gallery_title += painted
    picture = gallery_picture(predictions.synced(), evaluated.samples, data.class_names, gallery_title, paint)
    save_png(picture, out / "errors.png")
    print(metrics_table(results, data.class_names))
    if rewritten is not None:
        print(calibration_note(report["calibration"], cfg.checkpoint, *rewritten))
    print(f"\nmetrics.json, confusion_matrix.png and errors.png (the most confident mistakes) in {out}")
    return report


def cam_painter(model: Any, state: dict, data: ImageData, device: Any) -> tuple[Any, str]:
    """For errors.png with cam=true: (path, class) -> the image with where ``model`` looked for
    that class over it, and what the overlays are; a model without a convolutional feature map is
    refused first."""
    import torch

    from data.images import load_rgb
    from data.transforms import build_transform
    from trainer.evaluation.cam import ClassActivationMaps, overlay

    settings = data.settings
    cams = ClassActivationMaps(model, settings.image_size, state["config"]["model"]["name"])
    cams.check(settings.image_size, device)
    about = f"overlays: where the model looked for the class it predicted, {cams.describe()}"
    print(f"errors.png {about}")
    transform = build_transform(settings, is_training=False)

    def paint(path: str, predicted: int) -> Any:
        image = load_rgb(path, target_size=settings.image_size)
        heat = cams.maps(transform(image)[None].to(device), torch.tensor([predicted], device=device))[0]
        return overlay(image, heat, settings.crop_pct)

    return paint, f"; {about}"


def calibration_note(c: dict, checkpoint: str, before: float, was_linked: bool) -> str:
    """What calibrate=true changed and how its numbers relate to the table's."""
    link = (
        " It shared one file with another name (best.pt is a hard link of last.pt when that epoch was"
        " the best); it now has a file of its own, and the other name keeps the uncalibrated one."
        if was_linked
        else ""
    )
    return (
        f"\nTemperature {c['temperature']:.3f} (was {before:.3g}), fitted on {c['images']} images of "
        f"{c['fitted_on']}, stored in {checkpoint}, which was rewritten whole.{link}\n"
        f"Cross-fitted (T fitted on one half, measured on the other): NLL {c['nll_before']:.4f} -> "
        f"{c['nll_after']:.4f}, ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f}. The table above uses "
        f"T fitted on all {c['images']} images and measured on them: a little lower than cross-fitted."
    )


if __name__ == "__main__":
    run_app(evaluate, EvaluateSettings, "evaluate", __doc__)
