"""Running train.py and reading what a run leaves: the command line, the tree settings most tests
use, TensorBoard's tags by the names a run reports, a checkpoint's weights compared exactly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import ROOT
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from trainer.results import board_tag

TREE = ["dataset=imagefolder", "dataset.batch_size=4", "dataset.scale=[0.7,1.0]"]


class ByName(dict):
    """TensorBoard's tags, looked up by the names a run reports (``val/acc``: ``val_details/acc``)."""

    def __getitem__(self, name: str) -> list:
        return super().__getitem__(board_tag(name))


def scalar_tags(run_dir: Path) -> dict[str, list]:
    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return ByName({tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]})


def run_train(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def weights(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a["epoch"] == b["epoch"] and a["num_updates"] == b["num_updates"]
    for key in ("model", "ema", "optimizer"):
        flat_a = a[key] if key != "optimizer" else {i: s["exp_avg"] for i, s in a[key]["state"].items()}
        flat_b = b[key] if key != "optimizer" else {i: s["exp_avg"] for i, s in b[key]["state"].items()}
        for name, tensor in flat_a.items():
            assert torch.equal(tensor, flat_b[name]), f"{key}.{name}"


def overrides(tree: Path) -> list[str]:
    return [
        "dataset=imagefolder",
        f"dataset.root={tree}",
        "dataset.batch_size=4",
        "dataset.scale=[0.5,1.0]",
        "mixup=default",
        "mixup.prob=0.5",
        "loss=ldam",
        "loss.drw_epoch=3",
        "trainer.epochs=4",
    ]


def catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler of its own for ``signum`` (Linux: /proc's SigCgt)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
    return bool(int(caught, 16) >> (signum - 1) & 1)


def wait_until_it_catches(proc: subprocess.Popen, signum: int, limit: float = 60) -> None:
    """Until ``proc`` has installed its handler for ``signum`` (its program has started), or ended."""
    deadline = time.time() + limit
    while not catches(proc.pid, signum) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
