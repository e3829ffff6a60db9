"""Throughput of the Trainer against a bare PyTorch loop and the data loader, as ratios in one run
(``benchmark.py``, ``measure=step``, the default).

    python scripts/benchmark.py [model=convnextv2_atto] [image_size=64] [batch_size=32] [steps=30]
                                [repeats=5] [amp_dtype=none|float16|bfloat16] [channels_last=false]
                                [compile=false] [device=auto] [data_root=DIR]

(a) the Trainer's training epoch with EMA, progress bar and logging on; (b) a bare loop written
here (forward, loss, backward, step, nothing else); both on the same random batches held on
the device, so the difference is what the Trainer adds per step. After one warm-up epoch each,
(a) and (b) alternate ``repeats`` times, so that drift on the machine hits both alike, and the
medians are reported. (c) one pass of the training loader alone over ``data_root`` (an
ImageFolder tree; default the built-in digits) at ``image_size``. Prints images/s and the
ratios trainer/bare and loader/trainer.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

from common.errors import UserError
from common.run_folder import RunFolder
from data.loaders import ImageData
from data.settings import DigitsSettings, ImageFolderSettings
from losses import CrossEntropyLoss
from trainer.config import TrainerConfig
from trainer.device import resolve_device
from trainer.parts import RunContext, TrainingParts
from trainer.trainer import Trainer

from tools.settings import StepSettings

AMP_DTYPES = {"none": None, "float16": torch.float16, "bfloat16": torch.bfloat16}


def synthetic_batches(steps: int, size: int, batch_size: int, device: torch.device) -> list:
    """Random batches already on ``device``: (a) and (b) then time the training step alone."""
    g = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(batch_size, 3, size, size, generator=g).to(device),
            torch.randint(0, 10, (batch_size,), generator=g).to(device),
        )
        for _ in range(steps)
    ]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_loop(model, device, amp_dtype, channels_last) -> Callable[[list], float]:
    """One epoch of the plainest training loop over the batches given: its images/s."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    model.train()

    def epoch(loader: list) -> float:
        sync(device)
        start, seen = time.perf_counter(), 0
        for images, target in loader:
            images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = F.cross_entropy(model(images), target)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            seen += images.shape[0]
        sync(device)
        return seen / (time.perf_counter() - start)

    return epoch


def trainer_epochs(model, loader, config: TrainerConfig, run_dir: Path) -> Callable[[], float]:
    """The Trainer's next training epoch over ``loader``: its images/s, as the Trainer reports it."""
    parts = TrainingParts(
        model=model,
        criterion=CrossEntropyLoss(),
        optimizer_factory=lambda m: torch.optim.AdamW(m.parameters(), lr=1e-4),
        train_loader=loader,
        val_loader=loader,
        class_names=[str(i) for i in range(10)],
        class_counts=[1] * 10,
    )
    trainer = Trainer(config, parts, RunContext(RunFolder(run_dir), seed=0))
    epochs = itertools.count(1)

    def epoch() -> float:
        images_per_s = trainer.train_one_epoch(next(epochs)).images_per_s
        sync(trainer.device)
        return images_per_s

    return epoch


def loader_alone(size: int, batch_size: int, cache: Path, data_root: str | None) -> float:
    """images/s of one pass of the training loader: ``data_root``'s ImageFolder, else the digits."""
    if data_root:
        data = ImageData(ImageFolderSettings(root=data_root, image_size=size, batch_size=batch_size))
    else:
        data = ImageData(DigitsSettings(root=str(cache), image_size=size, batch_size=batch_size))
    loader = data.train_loader(torch.Generator().manual_seed(0))
    start, seen = time.perf_counter(), 0
    for images, _ in loader:
        seen += images.shape[0]
    return seen / (time.perf_counter() - start)


def main(args: StepSettings) -> None:
    if args.amp_dtype not in AMP_DTYPES:
        raise UserError(f"amp_dtype={args.amp_dtype!r} is not one of: {', '.join(AMP_DTYPES)}.")
    if min(args.image_size, args.batch_size, args.steps, args.repeats) < 1:
        raise UserError("image_size, batch_size, steps and repeats must be at least 1.")
    size, bs, steps, repeats = args.image_size, args.batch_size, args.steps, args.repeats
    amp = None if args.amp_dtype == "none" else args.amp_dtype
    channels_last, compile_ = args.channels_last, args.compile
    config = TrainerConfig(
        epochs=2,
        device=args.device,
        amp=amp is not None,
        amp_dtype=amp or "float16",
        channels_last=channels_last,
        compile=compile_,
        progress=True,
        log_every_steps=20,
    )
    device = resolve_device(config.device)
    amp_dtype = AMP_DTYPES[args.amp_dtype]
    if device.type == "cpu" and amp_dtype == torch.float16:
        amp_dtype = None
    loader = synthetic_batches(steps, size, bs, device)
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=10)
    with tempfile.TemporaryDirectory() as tmp:
        trainer_epoch = trainer_epochs(model, loader, config, Path(tmp))
        torch.manual_seed(0)
        bare_model = timm.create_model(args.model, num_classes=10).to(device)
        if channels_last:
            bare_model = bare_model.to(memory_format=torch.channels_last)
        if compile_:
            bare_model = torch.compile(bare_model)
        bare_epoch = bare_loop(bare_model, device, amp_dtype, channels_last)
        trainer_epoch(), bare_epoch(loader)  # warm-up: cuDNN autotuning, compile, allocator
        timings = [(trainer_epoch(), bare_epoch(loader)) for _ in range(repeats)]
        trainer_ips, bare_ips = (statistics.median(t) for t in zip(*timings, strict=True))
        loader_ips = loader_alone(size, bs, Path(tmp) / "digits", args.data_root or None)
    name = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"\n{args.model} at {size} px, batch {bs}, {steps} steps, amp={amp}, "
        f"channels_last={channels_last}, compile={compile_}, on {name}; (a) and (b): medians of "
        f"{repeats} alternating epochs"
    )
    print("| measure | images/s |\n| --- | --- |")
    print(f"| (a) Trainer epoch (EMA, progress, logging) | {trainer_ips:.1f} |")
    print(f"| (b) bare PyTorch loop | {bare_ips:.1f} |")
    print(f"| (c) ImageFolder loader alone ({args.data_root or 'digits'}) | {loader_ips:.1f} |")
    print(f"| trainer / bare | {trainer_ips / bare_ips:.3f} |")
    print(f"| loader / trainer | {loader_ips / trainer_ips:.2f} |")
