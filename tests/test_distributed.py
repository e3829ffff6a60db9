"""DDP through torchrun on the CPU (gloo): one run directory, exact validation counts, resume."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from conftest import ATTO, ROOT, SHRINK, evaluate_single_process

from common.dist import Dist
from data.samplers import DistributedShuffle, ShardSampler

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def torchrun(*args: str, cwd: Path = ROOT, scratch: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if scratch is not None:  # the temporary folder, to see what a run leaves there
        scratch.mkdir()
        env["TMPDIR"] = str(scratch)
    command = [*TORCHRUN, str(ROOT / "train.py"), *SHRINK, *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, cwd=cwd)


def test_shards_cover_every_index_once_without_padding():
    for n in (13, 14):
        shards = [list(ShardSampler(n, Dist(rank, 0, 3))) for rank in range(3)]
        assert sorted(i for shard in shards for i in shard) == list(range(n))
        assert [len(ShardSampler(n, Dist(rank, 0, 3))) for rank in range(3)] == [len(s) for s in shards]
    base = list(range(10))
    train_shards = [list(DistributedShuffle(base, Dist(rank, 0, 3))) for rank in range(3)]
    assert [len(s) for s in train_shards] == [3, 3, 3]  # equal steps on every rank
    assert len({i for shard in train_shards for i in shard}) == 9


@pytest.mark.slow
def test_torchrun_trains_the_digits_and_matches_single_process_evaluation(digits_cache, tmp_path):
    run = tmp_path / "run"
    pretrained = timm.create_model("convnextv2_atto", num_classes=1000)
    weights = tmp_path / "pretrained.pth"
    torch.save(pretrained.state_dict(), weights)
    out = torchrun(
        f"dataset.root={digits_cache}",
        "mixup=default",
        "dataset.sampler=balanced",
        "trainer.accumulate_steps=2",  # gradients all-reduced on each group's last batch only (no_sync)
        f"model.checkpoint_path={weights}",
        "model.freeze_backbone_epochs=1",  # the backbone's gradients reduced, then dropped
        "optimizer.sam.rho=0.05",
        "optimizer.sam.classes=tail",  # ImbSAM: three backward passes under DDP and accumulation
        ATTO,  # the weights file's architecture
        f"hydra.run.dir={run}",
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert sorted(p.name for p in run.iterdir()) == [
        ".hydra",
        ".lock",
        "checkpoints",
        "classes.csv",
        "galleries",
        "metrics.csv",
        "metrics.json",
        "per_class.csv",
        "tensorboard",
        "train.log",
    ]
    row = next(csv.DictReader((run / "metrics.csv").open()))
    single = evaluate_single_process(run, tmp_path / "eval")
    assert sum(map(sum, single["confusion_matrix"])) == 500  # every validation image exactly once
    for key in ("acc", "balanced_acc", "macro_f1", "ece"):
        assert float(row[f"val_{key}"]) == pytest.approx(single[key], abs=1e-6), key
    assert float(row["val_loss"]) == pytest.approx(single["loss"], abs=1e-4)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state["model"])
    assert torch.equal(state["model"]["stem.0.weight"], pretrained.state_dict()["stem.0.weight"])  # frozen


@pytest.mark.slow
def test_torchrun_makes_one_timestamped_run_and_resumes_into_it(image_tree, tmp_path):
    common = ["dataset=imagefolder", f"dataset.root={image_tree}", "dataset.batch_size=4"]
    scratch = tmp_path / "tmp"
    first = torchrun(*common, cwd=tmp_path, scratch=scratch)  # Hydra's default outputs/<date>/<time>/
    assert first.returncode == 0, first.stderr[-4000:]
    assert not list(scratch.glob("rank*"))  # rank 1's log folder is gone (torchrun leaves its own)
    runs = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs  # one directory for both ranks, whatever their clocks said
    run = runs[0]
    second = torchrun(*common, f"hydra.run.dir={run}", "trainer.epochs=2", "resume=auto", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-4000:]
    assert [r["epoch"] for r in csv.DictReader((run / "metrics.csv").open())] == ["1", "2"]
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2


def test_threads_leave_room_for_loader_workers(monkeypatch):
    from trainer.distributed import cpu_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert cpu_threads(None, num_workers=8) == 8
    assert cpu_threads(None, num_workers=0) == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert cpu_threads(None, num_workers=2) == 2
    assert cpu_threads(None, num_workers=6) == 1  # never zero
    assert cpu_threads(3, num_workers=6) == 3  # trainer.num_threads wins
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")  # a SLURM task: its own CPUs, not the node's
    assert cpu_threads(None, num_workers=1) == 3


def ranks_agree_on(rank: int, store: str, out: str) -> None:
    """One of 2 gloo processes: the same model, then rank 1's last weight one bit off."""
    import logging

    import torch.distributed as tdist

    from trainer.hooks.ranks import RanksAgree

    tdist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    model = torch.nn.Linear(3, 2)
    torch.nn.init.constant_(model.weight, 0.5)
    torch.nn.init.zeros_(model.bias)
    handler = logging.FileHandler(out)
    logging.getLogger("trainer.trainer").addHandler(handler)
    logging.getLogger("trainer.trainer").setLevel(logging.INFO)
    RanksAgree(model, Dist(rank, 0, 2)).on_fit_end(None, rank == 0)
    if rank == 1:
        with torch.no_grad():
            model.bias[-1] = torch.nextafter(model.bias[-1], torch.tensor(1.0))
    RanksAgree(model, Dist(rank, 0, 2)).on_fit_end(None, rank == 0)
    handler.close()
    tdist.destroy_process_group()


def test_rank_zero_says_whether_every_rank_ends_with_the_same_weights(tmp_path):
    out = tmp_path / "log"
    torch.multiprocessing.spawn(ranks_agree_on, args=(str(tmp_path / "store"), str(out)), nprocs=2)
    agree, apart = out.read_text().splitlines()
    assert agree.startswith("DDP: all 2 ranks end with identical weights (sha256 ")
    assert apart.startswith("DDP: rank(s) 1 end with other weights than rank 0")
