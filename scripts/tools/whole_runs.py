"""Whole runs as users launch them, timed side by side as processes (``benchmark.py measure=runs``).

    python scripts/benchmark.py measure=runs data_root=TREE [repeats=3] [timm_train=PATH/train.py]
                                [model=convnextv2_atto] [image_size=32] [batch_size=16]

Each command is a fresh process, start-up included; within each repetition every command runs
once, in turn, so that drift on the machine hits all alike; the median wall time is reported,
and the speed of train.py relative to the other (its time / train.py's time).

(1) plain: 8 epochs of cross-entropy, no EMA, no Mixup: train.py against the bare loop
    (``tools/reference_loop.py validate=epoch``: the same model, data, batch, epochs, AdamW with a
    warm-up and cosine schedule, one validation pass per epoch; no checkpoint, log or figure).
(2) user: 4 epochs with the RAF-DB recipes' Mixup/CutMix (prob 0.1, smoothing 0.1), EMA 0.9998
    validated every epoch, and clipping at 5: train.py against timm's own train.py with the same
    settings, which also validates its EMA every epoch and keeps last and best checkpoints. timm's
    script is not in the timm wheel: ``timm_train`` names a checkout's train.py (skipped without).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common.errors import UserError

from tools.settings import RunsSettings

ROOT = Path(__file__).resolve().parents[2]


def timed(command: list[str]) -> float:
    """Seconds the command took as a process; stops the benchmark if it fails."""
    start = time.perf_counter()
    out = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"benchmark: {' '.join(command[:3])} ... failed:\n{out.stderr[-3000:]}")
    return elapsed


def commands(args: RunsSettings, tmp: Path) -> dict[str, dict[str, list[str]]]:
    """The two comparisons: {name: {label: command}}."""
    root, size, batch, model = args.data_root, args.image_size, args.batch_size, args.model
    python = sys.executable
    ours = [
        python,
        str(ROOT / "train.py"),
        "dataset=imagefolder",
        f"dataset.root={root}",
        f"dataset.image_size={size}",
        f"dataset.batch_size={batch}",
        "dataset.num_workers=0",
        "overwrite=true",  # each repetition trains afresh in the same folder
        f"model.name={model}",
    ]
    plain = {
        "train.py": [
            *ours,
            "trainer.epochs=8",
            "trainer.ema.enabled=false",
            "dataset.color_jitter=0",  # the bare loop's augmentation: random-resized crops only
            "dataset.hflip=0",
            "dataset.scale=[0.35,1.0]",
            f"hydra.run.dir={tmp}/plain",
        ],
        "bare loop": [
            python,
            str(ROOT / "scripts" / "tools" / "reference_loop.py"),
            f"root={root}",
            "epochs=8",
            f"image_size={size}",
            f"batch_size={batch}",
            f"model_name={model}",
            "lr=1e-3",
            "validate=epoch",
        ],
    }
    user = ["mixup=default", "trainer.clip_grad=5.0", "trainer.ema.decay=0.9998", "trainer.epochs=4"]
    comparisons = {"plain, 8 epochs": plain}
    if args.timm_train:
        classes = sum(1 for p in (Path(root) / "train").iterdir() if p.is_dir())
        cuda = torch.cuda.is_available()
        timm_args = f"--model {model} --num-classes {classes} --img-size {size} -b {batch} --epochs 4 "
        timm_args += "--opt adamw --lr 1e-3 --weight-decay 0.05 --sched cosine --warmup-epochs 1 "
        timm_args += "--mixup 0.8 --cutmix 1.0 --mixup-prob 0.1 --smoothing 0.1 --clip-grad 5.0 "
        timm_args += f"--model-ema --model-ema-decay 0.9998 -j 0 --device {'cuda' if cuda else 'cpu'}"
        comparisons["user, 4 epochs"] = {
            "train.py": [*ours, *user, f"hydra.run.dir={tmp}/user"],
            "timm train.py": [
                python,
                args.timm_train,
                "--data-dir",
                root,
                "--train-split",
                "train",
                "--val-split",
                "valid",
                *timm_args.split(),
                *([] if cuda else ["--no-prefetcher"]),
                "--output",
                str(tmp / "timm"),
            ],
        }
    return comparisons


def main(args: RunsSettings) -> None:
    if not (Path(args.data_root) / "train").is_dir():
        raise UserError(f"data_root={args.data_root!r} is not a folder with train/ and valid/ class folders.")
    if args.timm_train and not Path(args.timm_train).is_file():
        raise UserError(f"timm_train={args.timm_train!r} is not a file (timm's train.py).")
    if args.repeats < 1:
        raise UserError(f"repeats={args.repeats} must be at least 1.")
    repeats = args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        comparisons = commands(args, Path(tmp))
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(repeats):
            for name, pair in comparisons.items():
                for label, command in pair.items():
                    times.setdefault((name, label), []).append(timed(command))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"\nWhole runs on {args.data_root}, {args.model} at {args.image_size} px, batch")
    print(f"{args.batch_size}, on {device}; median of {repeats} alternating repetitions (seconds)\n")
    print("| run | train.py | other | other's time | train.py speed / other's |")
    print("| --- | --- | --- | --- | --- |")
    for name, pair in comparisons.items():
        ours, (other, _) = statistics.median(times[(name, "train.py")]), list(pair.items())[1]
        theirs = statistics.median(times[(name, other)])
        print(f"| {name} | {ours:.1f} | {other} | {theirs:.1f} | {theirs / ours:.2f} |")
