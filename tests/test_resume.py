"""Never lose a run: resume after SIGKILL or mid-epoch is exact; checkpoints survive a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SHRINK, make_tree
from helpers.runs import TREE, assert_same_weights, overrides, weights

import trainer.checkpoint as state_module
from train import train

pytestmark = pytest.mark.slow


class Crash(Exception):
    pass


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """120 training images: 30 steps of 4 per epoch, a few seconds per epoch on a CPU."""
    return make_tree(tmp_path / "tree", {"a": (60, 3), "b": (40, 3), "c": (20, 3)})


@pytest.mark.parametrize(
    ("accumulate", "every", "extra"), [(1, 7, ()), (2, 14, ()), (2, 14, ("optimizer.sam.rho=0.05",))]
)
def test_mid_epoch_checkpoint_resumes_exactly(
    cfg_factory, tree, tmp_path, monkeypatch, accumulate, every, extra
):
    common = [
        *overrides(tree),
        f"trainer.checkpoint_every_steps={every}",
        f"trainer.accumulate_steps={accumulate}",  # 2: 15 updates of 2 batches an epoch
        "trainer.epochs=3",
        *extra,  # SAM: each batch's ascent, under accumulation, with Mixup and LDAM-DRW
    ]
    straight = tmp_path / "straight"
    train(cfg_factory(*common), straight)

    save = state_module.save_checkpoint

    def dying_save(state, path):
        save(state, path)
        if state["epoch"] == 1 and state.get("partial", {}).get("step") == 14:
            raise Crash  # killed in epoch 2, after step 14 was checkpointed

    stopped = tmp_path / "stopped"
    with monkeypatch.context() as m:
        m.setattr(state_module, "save_checkpoint", dying_save)
        with pytest.raises(Crash):
            train(cfg_factory(*common), stopped)
    assert weights(stopped)["partial"]["step"] == 14
    train(cfg_factory(*common, "resume=auto"), stopped)
    assert_same_weights(weights(straight), weights(stopped))
    # the interrupted epoch's row (epoch, train_loss, lr) is the uninterrupted run's
    rows = [r.split(",") for r in (stopped / "metrics.csv").read_text().splitlines()]
    straight_rows = [r.split(",") for r in (straight / "metrics.csv").read_text().splitlines()]
    assert [r[0] for r in rows[1:]] == ["1", "2", "3"]
    assert [r[:3] for r in rows] == [r[:3] for r in straight_rows]


def run_cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *SHRINK, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkilled_run_resumed_with_auto_matches_an_uninterrupted_one(cfg_factory, tree, tmp_path):
    straight = tmp_path / "straight"
    train(cfg_factory(*overrides(tree)), straight)
    run = tmp_path / "run"
    proc = run_cli(*overrides(tree), f"hydra.run.dir={run}")
    last = run / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # in the middle of epoch 2
    proc.wait()
    assert weights(run)["epoch"] < 4, "the run finished before it could be killed"
    resumed = run_cli(*overrides(tree), f"hydra.run.dir={run}", "resume=auto")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert_same_weights(weights(straight), weights(run))
    epochs = [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3", "4"]


def test_resume_auto_starts_fresh_without_a_checkpoint(cfg_factory, tree, tmp_path):
    run = tmp_path / "run"
    train(cfg_factory(*overrides(tree), "trainer.epochs=1", "resume=auto"), run)
    assert weights(run)["epoch"] == 1


def test_a_kill_during_a_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "last.pt"
    writer = "\n".join(
        [
            "import sys, pathlib, torch",
            "sys.path.insert(0, sys.argv[2])",
            "from trainer.checkpoint import save_checkpoint",
            "path, i = pathlib.Path(sys.argv[1]), 0",
            "while True:",
            "    i += 1",
            "    save_checkpoint({'i': i, 'w': torch.full((4_000_000,), float(i))}, path)",
        ]
    )
    for delay in (0.05, 0.13, 0.31):
        proc = subprocess.Popen([sys.executable, "-c", writer, str(path), str(ROOT)])
        while not path.exists():
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = torch.load(path, weights_only=True)
        assert torch.equal(state["w"], torch.full((4_000_000,), float(state["i"])))


def test_checkpoint_formats_old_and_newer(cfg_factory, image_tree, tmp_path):

    from common.errors import UserError
    from trainer.checkpoint import CHECKPOINT_VERSION, load_checkpoint

    run = tmp_path / "run"
    train(cfg_factory(*TREE, f"dataset.root={image_tree}"), run)
    state = weights(run)
    assert state["version"] == CHECKPOINT_VERSION
    old = {k: v for k, v in state.items() if k not in ("version", "num_updates", "class_counts")}
    old["acc_best"] = {"val": 0.5}  # what format 1 also kept, and is no longer read
    old["config"] = {**old["config"], "dataset_class": "data.folders.ImageFolderData"}  # its old name
    torch.save(old, tmp_path / "v1.pt")  # the format before checkpoints carried a version
    upgraded = load_checkpoint(tmp_path / "v1.pt")
    assert upgraded["version"] == CHECKPOINT_VERSION
    assert upgraded["class_counts"] is None and upgraded["num_updates"] == 0
    assert upgraded["config"]["dataset_class"] == "data.settings.ImageFolderSettings"
    from lib.runs import dataset_settings

    assert dataset_settings(upgraded).root == state["config"]["dataset"]["root"]  # as the scripts read it
    with pytest.raises(UserError, match="data source 'data.gone.Nowhere' is not one this version knows"):
        dataset_settings({**state, "config": {**state["config"], "dataset_class": "data.gone.Nowhere"}})
    torch.save({**state, "version": CHECKPOINT_VERSION + 1}, tmp_path / "next.pt")
    with pytest.raises(UserError, match=f"format {CHECKPOINT_VERSION + 1}, newer than this version reads"):
        load_checkpoint(tmp_path / "next.pt")
