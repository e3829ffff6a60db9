"""Sweeps launched from the tests (``train.py -m`` through a launcher) and what their jobs leave."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from conftest import ROOT, SHRINK, evaluate_single_process


def command(*args: str) -> list[str]:
    """train.py with the tests' small settings; ``-m`` before the overrides, which follow SHRINK's."""
    flags = [a for a in args if a.startswith("-")]
    return [sys.executable, str(ROOT / "train.py"), *flags, *SHRINK, *(a for a in args if a not in flags)]


def start_sweep(
    args: Sequence[str], folder: Path, env: Mapping[str, str], checkpoints: int = 1
) -> subprocess.Popen:
    """A sweep into ``folder``, returned once ``checkpoints`` of its jobs have written last.pt (or
    it ended, or 5 minutes passed); its console is the process's stdout."""
    proc = subprocess.Popen(
        command(*args, f"hydra.sweep.dir={folder}"),
        cwd=ROOT,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 300
    while len(list(folder.glob("*/checkpoints/last.pt"))) < checkpoints and time.time() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    return proc


def job_dirs(folder: Path) -> list[Path]:
    """The run folders of a sweep's jobs (not ``.submitit`` and the like)."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def task_pids(folder: Path) -> list[int]:
    """The processes running the submitit job tasks of the sweep in ``folder`` (not the launcher)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in cmdline and any(str(folder).encode() in a for a in cmdline):
            pids.append(int(proc.name))
    return pids


def assert_one_ddp_run(job: Path, scratch: Path) -> None:
    """A job of two tasks trained as one DDP run: its ranks ended alike, and its metrics equal a
    single-process evaluation of its weights, every validation image counted once."""
    log = (job / "train.log").read_text()
    assert "DDP: 2 processes (gloo)" in log and "DDP: all 2 ranks end with identical weights" in log
    single = evaluate_single_process(job, scratch)
    assert sum(map(sum, single["confusion_matrix"])) == 12  # the tests' image_tree: 12 validation images
    with (job / "metrics.csv").open(newline="") as f:
        row = next(csv.DictReader(f))
    for key in ("acc", "balanced_acc", "macro_f1", "ece"):
        assert float(row[f"val_{key}"]) == pytest.approx(single[key], abs=1e-6), key
