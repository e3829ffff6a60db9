"""Train cross-entropy, focal, LDAM and LDAM-DRW with the same seed and budget; print one table.

    python scripts/compare_losses.py [trainer.epochs=10] [seed=0] [any other override ...]

Every run uses the built-in long-tailed digits (or whatever dataset the overrides choose) and
the same settings except the loss. The table reports, for the raw model after the last epoch:
overall accuracy, balanced accuracy (mean per-class recall), macro-F1 and the mean accuracy
of the three rarest training classes. Runs are kept under outputs/compare_losses/<time>/<name>.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from train import train  # noqa: E402
from trainer import UserError  # noqa: E402


def variants(epochs: int) -> dict[str, list[str]]:
    """The losses compared; DRW switches on for the last fifth of training, as in the paper (160/200)."""
    drw = f"loss.drw_epoch={int(0.8 * epochs) + 1}"
    return {
        "ce": ["loss=ce"],
        "ce_drw": ["loss=ce", drw],
        "focal": ["loss=focal"],
        "ldam": ["loss=ldam"],
        "ldam_drw": ["loss=ldam", drw],
    }


def rarest_accuracy(per_class: list[float], counts: list[int], k: int = 3) -> float:
    rarest = sorted(range(len(counts)), key=lambda c: counts[c])[:k]
    return sum(per_class[c] for c in rarest) / len(rarest)


def main(overrides: list[str]) -> None:
    out = ROOT / "outputs" / "compare_losses" / time.strftime("%Y-%m-%d_%H-%M-%S")
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        base = compose(config_name="train", overrides=["trainer.progress=false", *overrides])
        rows = []
        for name, loss_overrides in variants(base.trainer.epochs).items():
            cfg = compose(
                config_name="train", overrides=["trainer.progress=false", *overrides, *loss_overrides]
            )
            print(f"== {name}: {' '.join(loss_overrides)}", flush=True)
            summary = train(cfg, out / name)
            final = summary["final"]["val"]
            counts = summary["class_counts"]
            rows.append(
                (
                    name,
                    final["acc"],
                    final["balanced_acc"],
                    final["macro_f1"],
                    rarest_accuracy(final["acc_per_class"], counts),
                )
            )
    setting = " ".join(overrides) or "none"
    print(f"\n{base.trainer.epochs} epochs, seed {base.seed}, overrides: {setting}; runs in {out}")
    print("| loss | accuracy | balanced accuracy | macro-F1 | 3 rarest classes |")
    print("| --- | --- | --- | --- | --- |")
    for name, acc, bal, f1, rare in rows:
        print(f"| {name} | {acc:.4f} | {bal:.4f} | {f1:.4f} | {rare:.4f} |")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UserError as err:
        sys.exit(f"compare_losses: {err}")
