"""A plain PyTorch training loop, written apart from the Trainer, to check the Trainer's quality.

    python scripts/tools/reference_loop.py root=TREE [epochs=20] [lr=2e-3] [weight_decay=0.05] [seed=0]
                                           [model=convnextv2_atto] [image_size=32] [batch_size=32]
                                           [scale=0.35] [hflip=0.0] [warmup_epochs=1] [tau=0]
                                           [validate=end|epoch]

Deliberately shares no code with ``trainer/``, ``data/`` or ``losses/``: torchvision's
ImageFolder and transforms, ``timm.create_model``, torch's AdamW on all parameters, a linear
warm-up then cosine schedule stepped per update, ``F.cross_entropy``, and a confusion matrix
counted here. ``tau`` > 0 trains with the logit-adjusted loss CE(z + tau log prior) instead
(Menon et al., ICLR 2021), written out here again. If the framework ever scores clearly below
this loop at the same settings, the framework has a defect. ``scripts/compare_losses.py`` runs
it as one row of its table. ``validate=epoch`` validates after every epoch, as train.py does:
the bare loop that ``scripts/benchmark.py measure=runs`` times whole runs against.
"""

from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING

from common.errors import UserError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def run(
    root: str,
    epochs: int = 20,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    seed: int = 0,
    model_name: str = "convnextv2_atto",
    image_size: int = 32,
    batch_size: int = 32,
    scale: float = 0.35,
    hflip: float = 0.0,
    warmup_epochs: int = 1,
    tau: float = 0.0,
    train_dir: str = "train",
    val_dir: str = "valid",
    validate_every_epoch: bool = False,
) -> dict:
    """Train and validate on ``root/train_dir`` and ``root/val_dir``; the last epoch's metrics."""
    import numpy as np  # here, so that --help and a settings mistake answer before torch loads
    import timm
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torchvision import datasets
    from torchvision import transforms as T

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    to_rgb = T.Lambda(lambda img: img.convert("RGB"))
    train_tf = T.Compose(
        [
            to_rgb,
            T.RandomResizedCrop(image_size, scale=(scale, 1.0)),
            T.RandomHorizontalFlip(hflip),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )
    val_tf = T.Compose([to_rgb, T.Resize((image_size, image_size)), T.ToTensor(), T.Normalize(MEAN, STD)])
    train_set = datasets.ImageFolder(str(Path(root) / train_dir), train_tf)
    val_set = datasets.ImageFolder(str(Path(root) / val_dir), val_tf)
    num_classes = len(train_set.classes)
    counts = np.bincount(train_set.targets, minlength=num_classes)
    train_loader = DataLoader(
        train_set, batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    val_loader = DataLoader(val_set, 2 * batch_size)

    model = timm.create_model(model_name, num_classes=num_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    total, warmup = epochs * len(train_loader), warmup_epochs * len(train_loader)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    offset = torch.tensor(tau * np.log(counts / counts.sum()), dtype=torch.float32)

    def validate() -> np.ndarray:
        model.eval()
        confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        with torch.no_grad():
            for images, labels in val_loader:
                predicted = model(images).argmax(1)
                np.add.at(confusion, (labels.numpy(), predicted.numpy()), 1)
        return confusion

    for epoch in range(epochs):
        model.train()
        for images, labels in train_loader:
            loss = F.cross_entropy(model(images) + offset, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            lr_scheduler.step()
        if validate_every_epoch and epoch < epochs - 1:
            validate()
    confusion = validate()
    recall = confusion.diagonal() / confusion.sum(1).clip(min=1)
    precision = confusion.diagonal() / confusion.sum(0).clip(min=1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall + 1e-12), 0.0)
    few = [r for r, n in zip(recall, counts, strict=True) if n < 20]
    return {
        "acc": float(confusion.diagonal().sum() / confusion.sum()),
        "balanced_acc": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "acc_few": float(np.mean(few)) if few else None,
        "acc_per_class": recall.tolist(),
        "class_counts": counts.tolist(),
    }


@dataclass
class ReferenceSettings:
    root: str = MISSING  # a folder with train/ and valid/ class folders
    epochs: int = 20
    lr: float = 2e-3
    weight_decay: float = 0.05
    seed: int = 0
    model_name: str = "convnextv2_atto"  # not "model", the name of a config group
    image_size: int = 32
    batch_size: int = 32
    scale: float = 0.35
    hflip: float = 0.0
    warmup_epochs: int = 1
    tau: float = 0.0
    validate: str = "end"  # end, or epoch: after every epoch, as train.py does


def main(args: ReferenceSettings) -> None:
    if args.validate not in ("end", "epoch"):
        raise UserError(f"validate={args.validate!r} is not one of: end, epoch")
    try:
        result = run(
            args.root,
            epochs=args.epochs,
            lr=args.lr,
            weight_decay=args.weight_decay,
            seed=args.seed,
            model_name=args.model_name,
            image_size=args.image_size,
            batch_size=args.batch_size,
            scale=args.scale,
            hflip=args.hflip,
            warmup_epochs=args.warmup_epochs,
            tau=args.tau,
            validate_every_epoch=args.validate == "epoch",
        )
    except (ValueError, FileNotFoundError) as err:
        raise UserError(str(err)) from None
    print({k: v for k, v in result.items() if k != "acc_per_class"})


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lib.app import run_app

    run_app(main, ReferenceSettings, "reference_loop", __doc__)
