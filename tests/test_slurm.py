"""Sweeps on a real SLURM cluster: one node of this machine, started by ``tests/cluster/slurm.sh``
(slurmctld, slurmd, slurmdbd with MariaDB, munge), jobs sent through ``sbatch`` by Hydra's
submitit launcher as README documents it (``hydra/launcher=slurm``).

What a cluster does to a job is done here by SLURM itself: ``scontrol requeue`` (a preemption),
a time limit with submitit's advance signal, ``--ntasks=2`` (one DDP run from SLURM's
environment), ``scancel``. Skipped, with the reason, where the cluster cannot be started (not
root, no apt-get): ``make test-cluster`` and ``.ci/run`` run these on a fresh machine.
"""

from __future__ import annotations

import csv
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, make_tree
from helpers.runs import assert_same_weights, overrides, weights
from helpers.sweeps import assert_one_ddp_run, command, job_dirs, start_sweep, task_pids

from common.run_folder import RunFolder
from train import train

pytestmark = pytest.mark.slurm

CLUSTER = ROOT / "tests" / "cluster" / "slurm.sh"
TREE = ["dataset=imagefolder", "dataset.batch_size=4"]
# README's launcher, sized for this machine: one CPU and 1 GB a task, no GPUs
SLURM = [
    "-m",
    "hydra/launcher=slurm",
    "hydra.launcher.tasks_per_node=1",
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
]


@pytest.fixture(scope="module")
def slurm() -> dict[str, str]:
    """The cluster, up for this module's tests: the environment that reaches it."""
    up = subprocess.run([str(CLUSTER), "up"], capture_output=True, text=True, timeout=900)
    if up.returncode == 3:
        pytest.skip(up.stderr.strip())
    assert up.returncode == 0, up.stderr
    conf = up.stdout.strip().splitlines()[-1].partition("=")[2]
    env = {**os.environ, "SLURM_CONF": conf, "HF_HUB_OFFLINE": "1"}
    yield env
    subprocess.run([str(CLUSTER), "down"], capture_output=True, timeout=300)


def sweep(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(*SLURM, *args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )


def slurm_jobs(folder: Path) -> list[str]:
    """The SLURM job ids of a sweep, from submitit's folders (``12`` or array tasks ``12_0``)."""
    return sorted(p.name for p in (folder / ".submitit").iterdir() if p.is_dir())


def sacct(env: dict[str, str], job: str) -> list[dict[str, str]]:
    """Every record SLURM's accounting holds of ``job`` and its steps, requeues included (-D), once
    none is still running (a task writes its result before its process and step end)."""
    deadline = time.time() + 60
    while True:
        out = subprocess.run(
            ["sacct", "-D", "-j", job, "-o", "JobID,State,ExitCode", "--parsable2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        records = list(csv.DictReader(out.stdout.splitlines(), delimiter="|"))
        if (
            not any(r["State"] in ("RUNNING", "COMPLETING", "PENDING") for r in records)
            or time.time() > deadline
        ):
            return records
        time.sleep(0.5)


def test_a_sweep_runs_each_job_through_sbatch_and_names_the_best(slurm, image_tree, tmp_path):
    folder = tmp_path / "sweep"
    out = sweep(slurm, *TREE, f"dataset.root={image_tree}", "loss=ce,focal", f"hydra.sweep.dir={folder}")
    assert out.returncode == 0, out.stderr[-3000:]
    said = out.stdout + out.stderr
    assert "The sweep's 2 job(s)" in said and f"Best: {folder}/" in said
    assert [p.name for p in job_dirs(folder)] == ["0_loss-ce", "1_loss-focal"]
    for job, loss in (("0_loss-ce", "CrossEntropyLoss"), ("1_loss-focal", "FocalLoss")):
        log = (folder / job / "train.log").read_text()
        assert f"loss {loss}" in log and RunFolder(folder / job).last.is_file()
        assert "CPU: 1 torch thread(s), 0 loader worker(s), 1 CPUs given by SLURM" in log
    [array] = {job.split("_")[0] for job in slurm_jobs(folder)}  # one array of two SLURM jobs
    states = {r["JobID"]: r["State"] for r in sacct(slurm, array)}
    assert states[f"{array}_0"] == states[f"{array}_1"] == "COMPLETED"
    rows = list(csv.DictReader((folder / "sweep_results.csv").open()))
    assert len(rows) == 2 and sum(r["is_best"] == "1" for r in rows) == 1


@pytest.mark.slow
def test_a_job_requeued_by_scontrol_resumes_and_ends_with_an_uninterrupted_runs_weights(
    slurm, cfg_factory, tmp_path
):
    tree = make_tree(tmp_path / "tree", {"a": (60, 3), "b": (40, 3), "c": (20, 3)})
    straight = tmp_path / "straight"
    threads = torch.get_num_threads()
    train(cfg_factory(*overrides(tree), "trainer.num_threads=1"), straight)
    torch.set_num_threads(threads)  # as the other tests of this process expect

    folder = tmp_path / "sweep"
    # one thread, as the uninterrupted run: the float sums then agree to the bit
    proc = start_sweep([*SLURM, *overrides(tree), "trainer.num_threads=1"], folder, slurm)
    time.sleep(0.5)  # into epoch 2
    [job] = slurm_jobs(folder)
    subprocess.run(["scontrol", "requeue", job], env=slurm, check=True, timeout=60)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    [run] = job_dirs(folder)
    log = (run / "train.log").read_text()
    assert "SIGTERM received: finishing the current step, then saving checkpoints/last.pt" in log
    assert "This job was requeued after a preemption or time-out: continuing with resume=auto" in log
    assert "Resuming after epoch" in log
    assert [r["State"] for r in sacct(slurm, job) if r["JobID"] == job] == ["REQUEUED", "COMPLETED"]
    assert not RunFolder(run).requeue_mark.exists()
    assert_same_weights(weights(straight), weights(run))


@pytest.mark.slow
def test_a_job_out_of_time_gets_its_advance_signal_saves_requeues_itself_and_finishes(slurm, tmp_path):
    tree = make_tree(tmp_path / "tree", {"a": (60, 3), "b": (40, 3), "c": (20, 3)})
    folder = tmp_path / "sweep"
    # USR2 about 30 s before the 2 minutes; SLURM sends it up to a minute early (its own resolution),
    # to a requeued job sooner than to the first (at about 60 s): 160 short epochs (about 0.7 s
    # each here) outlast the first job's signal and leave the requeued job well inside its own
    limit = ["hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=30"]
    args = [*TREE, f"dataset.root={tree}", "trainer.epochs=160", *limit, f"hydra.sweep.dir={folder}"]
    out = sweep(slurm, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    [run] = job_dirs(folder)
    log = (run / "train.log").read_text()
    assert "SIGUSR2 received: finishing the current step, then saving checkpoints/last.pt" in log
    assert "Requeued job" in log  # by submitit, from within the job, through the launcher's checkpoint
    assert "This job was requeued after a preemption or time-out: continuing with resume=auto" in log
    assert weights(run)["epoch"] == 160 and not RunFolder(run).requeue_mark.exists()
    [job] = slurm_jobs(folder)
    states = [r["State"] for r in sacct(slurm, job) if r["JobID"] == job]
    assert states[0] == "REQUEUED" and states[-1] == "COMPLETED"


@pytest.mark.slow
def test_a_job_of_two_tasks_trains_ddp_from_slurms_environment_and_its_ranks_agree(
    slurm, image_tree, tmp_path
):
    folder = tmp_path / "sweep"
    out = sweep(
        slurm,
        "hydra.launcher.tasks_per_node=2",
        *TREE,
        f"dataset.root={image_tree}",
        f"hydra.sweep.dir={folder}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    [run] = job_dirs(folder)
    assert_one_ddp_run(run, tmp_path / "eval")  # each rank hashed its own weights


@pytest.mark.slow
def test_a_cancelled_sweep_leaves_no_task_running_and_every_job_resumable(slurm, tmp_path):
    tree = make_tree(tmp_path / "tree", {"a": (60, 3), "b": (40, 3), "c": (20, 3)})
    folder = tmp_path / "sweep"
    args = [*TREE, f"dataset.root={tree}", "loss=ce,focal", "trainer.epochs=6"]
    proc = start_sweep([*SLURM, *args], folder, slurm, checkpoints=2)
    [array] = {job.split("_")[0] for job in slurm_jobs(folder)}
    subprocess.run(["scancel", array], env=slurm, check=True, timeout=60)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "Traceback" not in out, out[-3000:]
    assert f"Job {array}_0 of this sweep ended without a result: SLURM reports CANCELLED" in out
    assert "the same command with resume=auto continues every unfinished job" in out
    deadline = time.time() + 60
    while task_pids(folder) and time.time() < deadline:
        time.sleep(0.2)
    assert task_pids(folder) == []  # no orphan trains on
    for run in job_dirs(folder):
        assert weights(run)["epoch"] < 6 and "stopped by SIGTERM" in (run / "train.log").read_text()

    again = sweep(slurm, *args, "resume=auto", f"hydra.sweep.dir={folder}")  # as the message says
    assert again.returncode == 0, again.stderr[-3000:]
    for run in job_dirs(folder):
        assert "Resuming after epoch" in (run / "train.log").read_text() and weights(run)["epoch"] == 6


def test_a_cluster_without_accounting_is_said_before_the_jobs_are_submitted(slurm, image_tree, tmp_path):
    bare = {**slurm, "SLURM_TEST_ACCOUNTING": "none"}
    try:
        subprocess.run([str(CLUSTER), "up"], env=bare, capture_output=True, timeout=300, check=True)
        out = sweep(slurm, *TREE, f"dataset.root={image_tree}", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    finally:  # the cluster as the other tests know it
        subprocess.run([str(CLUSTER), "up"], env=slurm, capture_output=True, timeout=300, check=True)
    assert out.returncode == 0, out.stderr[-3000:]  # jobs that finish are seen through their results
    said = out.stdout + out.stderr
    assert "This cluster has no job accounting (sacct answers: Slurm accounting storage is disabled)" in said
    assert said.count("no job accounting") == 1 and "Bypassing sacct error" not in said
