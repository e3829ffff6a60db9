"""Beyond one run: Hydra's submitit launcher (its local executor: jobs as their own processes,
a job of two tasks as one DDP run, a preempted job requeued) and Optuna searches."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from conftest import ROOT, compose_config, make_tree
from helpers.runs import assert_same_weights, overrides, weights
from helpers.sweeps import assert_one_ddp_run, command, job_dirs, start_sweep, task_pids
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from common.run_folder import RunFolder
from train import train
from trainer.shell import cluster
from trainer.shell.launch import hydra_override
from trainer.shell.sweep import NAME_LIMIT, SWEEP_ARGS_ENV, apply_search, sweep_subdir

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
TREE = ["dataset=imagefolder", "dataset.batch_size=4"]
LOCAL = ["-m", "hydra/launcher=submitit_local"]


def run_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def best_of(run: Path, column: str) -> float:
    with (run / "metrics.csv").open(newline="") as f:
        return max(float(row[column]) for row in csv.DictReader(f))


def test_submitit_local_runs_each_job_of_a_sweep_as_its_own_process(image_tree, tmp_path):
    sweep = tmp_path / "sweep"
    out = run_train(*LOCAL, *TREE, f"dataset.root={image_tree}", "loss=ce,focal", f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert [p.name for p in job_dirs(sweep)] == ["0_loss-ce", "1_loss-focal"]  # named as a local sweep
    for job, loss in (("0_loss-ce", "CrossEntropyLoss"), ("1_loss-focal", "FocalLoss")):
        assert (sweep / job / "checkpoints" / "last.pt").is_file()
        assert f"loss {loss}" in (sweep / job / "train.log").read_text()
    assert len(list(sweep.glob(".submitit/*/*_0_result.pkl"))) == 2  # two submitit jobs, each done


@pytest.mark.slow
def test_a_job_of_two_tasks_is_one_ddp_run_matching_a_single_process_evaluation(image_tree, tmp_path):
    sweep = tmp_path / "sweep"
    out = run_train(
        *LOCAL,
        "hydra.launcher.tasks_per_node=2",
        *TREE,
        f"dataset.root={image_tree}",
        f"hydra.sweep.dir={sweep}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    [run] = job_dirs(sweep)
    assert_one_ddp_run(run, tmp_path / "eval")


@pytest.mark.slow
def test_a_preempted_job_saves_is_requeued_and_ends_where_an_uninterrupted_one_would(cfg_factory, tmp_path):
    tree = make_tree(tmp_path / "tree", {"a": (60, 3), "b": (40, 3), "c": (20, 3)})
    straight = tmp_path / "straight"
    train(cfg_factory(*overrides(tree)), straight)

    sweep = tmp_path / "sweep"
    proc = start_sweep([*LOCAL, *overrides(tree)], sweep, ENV)
    time.sleep(0.5)  # into epoch 2
    [task] = task_pids(sweep)
    os.kill(task, signal.SIGUSR2)  # what submitit sends before a preemption or time-out
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    [run] = job_dirs(sweep)
    log = (run / "train.log").read_text()
    assert "SIGUSR2 received: finishing the current step, then saving checkpoints/last.pt" in log
    assert "A requeued job continues from it (resume=auto)" in log
    assert "This job was requeued after a preemption or time-out: continuing with resume=auto" in log
    assert "Resuming after epoch" in log
    assert "Requeued job" in log  # by submitit, through the launcher's checkpoint hook
    assert not RunFolder(run).requeue_mark.exists()  # done: a later job here starts fresh
    assert_same_weights(weights(straight), weights(run))


def test_an_optuna_search_names_the_best_trial_and_records_a_diverged_one_as_failed(image_tree, tmp_path):
    sweep = tmp_path / "sweep"
    search = [
        "-m",
        "hparams_search=longtail",
        *TREE,
        f"dataset.root={image_tree}",
        "loss=ldam",
        "mixup=none",
        "model.cosine_scale=choice(30,1e39)",  # 1e39 overflows float32: that trial's loss is NaN
        "hydra.sweeper.sampler.seed=3",  # its first three trials: 1e39, 30, 30
        f"hydra.sweep.dir={sweep}",
    ]
    out = run_train(*search, "hydra.sweeper.n_trials=3")
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    assert "Failed experiment: The training loss became NaN or infinite" in out.stdout
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    study = optuna.load_study(study_name="longtail", storage=storage)
    states = {t.params["model.cosine_scale"]: set() for t in study.trials}
    for trial in study.trials:
        states[trial.params["model.cosine_scale"]].add(trial.state)
    assert states == {1e39: {optuna.trial.TrialState.FAIL}, 30: {optuna.trial.TrialState.COMPLETE}}

    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    runs = {p.name: p for p in job_dirs(sweep)}
    completed = [p for name, p in runs.items() if "cosine_scale-30" in name]
    assert len(runs) == 3 and len(completed) == 2  # each trial's folder is named by its parameters
    best = max(completed, key=lambda p: best_of(p, "val_balanced_acc"))
    assert results["best_value"] == best_of(best, "val_balanced_acc")  # the monitor, as returned
    assert results["best_params"]["model.cosine_scale"] == 30
    lr = yaml.safe_load((best / ".hydra" / "overrides.yaml").read_text())
    assert f"optimizer.lr={results['best_params']['optimizer.lr']}" in lr
    assert f"Best: {best}, val/balanced_acc" in out.stdout  # the jobs' table names Optuna's best trial
    assert "\x1b[" not in out.stdout + out.stderr  # Optuna's colours only on a terminal
    table = {Path(r["folder"]).name: r for r in csv.DictReader((sweep / "sweep_results.csv").open())}
    assert table[best.name]["is_best"] == "1" and len(table) == 3
    assert all(len(name) <= 80 and "max_m-" in name for name in runs)  # LDAM's margin applies here

    names = {p.name for p in job_dirs(sweep)}
    earlier = {n: digest(sweep / n / "checkpoints" / "last.pt") for n in names if "1e+39" not in n}
    again = run_train(*search, "hydra.sweeper.n_trials=1")  # the same sweep folder continues the study
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Study longtail holds 3 trials: continuing with trial 3, sampler seed 6 (3 + 3)" in again.stdout
    trials = optuna.load_study(study_name="longtail", storage=storage).trials
    assert len(trials) == 4 and trials[3].params not in [t.params for t in trials[:3]]  # a new point
    [new] = [p for p in job_dirs(sweep) if p.name not in names]
    assert new.name.startswith("3_")  # numbered after the earlier trials, never in one of their folders
    assert {name: digest(sweep / name / "checkpoints" / "last.pt") for name in earlier} == earlier


def test_a_damaged_study_file_and_a_search_whose_trials_all_fail_are_one_message_each(tmp_path):
    search = ["-m", "hparams_search=longtail", *TREE, f"dataset.root={tmp_path / 'nowhere'}"]
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "optuna.db").write_bytes(b"not a database" * 100)
    out = run_train(*search, f"hydra.sweep.dir={damaged}", "hydra.sweeper.n_trials=1")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert (
        f"The Optuna study file {damaged / 'optuna.db'} (hydra.sweeper.storage) cannot be used" in out.stderr
    )
    assert "cannot be read as an SQLite database" in out.stderr

    failing = tmp_path / "failing"  # every trial is refused (no data): each is recorded failed
    out = run_train(*search, f"hydra.sweep.dir={failing}", "hydra.sweeper.n_trials=1")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "No trial of study longtail has completed" in out.stderr
    assert out.stdout.count("Failed experiment: dataset.root=") == 1  # the trial recorded with its reason
    study = optuna.load_study(study_name="longtail", storage=f"sqlite:///{failing / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]  # not left RUNNING


@pytest.mark.slow
def test_a_stopped_local_sweep_stops_its_jobs_which_save_instead_of_training_on_as_orphans(tmp_path):
    tree = make_tree(tmp_path / "tree", {"a": (60, 3), "b": (40, 3), "c": (20, 3)})
    sweep = tmp_path / "sweep"
    launcher = start_sweep([*LOCAL, *TREE, f"dataset.root={tree}", "trainer.epochs=20"], sweep, ENV)
    assert task_pids(sweep), "the job is not running"
    launcher.send_signal(signal.SIGTERM)
    err, _ = launcher.communicate(timeout=300)
    assert launcher.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Sweep stopped by SIGTERM: SIGTERM to 1 running job(s)" in err and "Traceback" not in err
    assert task_pids(sweep) == []  # no orphan trains on
    [run] = job_dirs(sweep)
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert saved["epoch"] < 20 and "stopped by SIGTERM" in (run / "train.log").read_text()


def test_a_sweeper_that_would_keep_the_worst_trial_is_refused(tmp_path):
    out = run_train(
        "-m",
        "hparams_search=longtail",
        "trainer.monitor=val/loss",
        "trainer.monitor_mode=min",
        "hydra.sweeper.n_trials=1",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert "hydra.sweeper.direction=maximize but train.py returns the best val/loss" in out.stderr
    assert "set hydra.sweeper.direction=minimize" in out.stderr
    assert not list((tmp_path / "sweep").glob("0_*"))  # refused before any trial


def test_search_values_map_onto_the_loss_they_apply_to():
    cfg = compose_config(["hparams_search=longtail", "loss=ldam", "trainer.epochs=10", "search.max_m=0.3"])
    apply_search(cfg)
    assert cfg.loss.max_m == 0.3 and cfg.loss.drw_epoch is None  # drw_fraction 1.0: never
    cfg = compose_config(
        ["hparams_search=longtail", "loss=ce", "trainer.epochs=10", "search.drw_fraction=0.8"]
    )
    apply_search(cfg)
    assert cfg.loss.drw_epoch == 9 and "max_m" not in cfg.loss  # the last 2 of 10 epochs re-weighted
    assert cfg.trainer.monitor == "val/balanced_acc"


def test_sweep_jobs_are_named_by_what_they_vary(monkeypatch):
    monkeypatch.delenv(SWEEP_ARGS_ENV, raising=False)
    task = ["loss=ce", "dataset.root=/data/faces", "optimizer.lr=0.0004430375245218263"]
    argv = ["train.py", "-m", "loss=ce,focal", "dataset.root=/data/faces", "optimizer.lr=1e-3"]
    monkeypatch.setattr(sys, "argv", argv)
    assert sweep_subdir(0, task) == "0_loss-ce"
    monkeypatch.setenv(SWEEP_ARGS_ENV, json.dumps(argv[1:]))  # a job process: submitit's command line
    monkeypatch.setattr(sys, "argv", ["submitit"])
    assert sweep_subdir(0, task) == "0_loss-ce"
    monkeypatch.setenv(SWEEP_ARGS_ENV, json.dumps(["hparams_search=longtail", "loss=ce"]))
    params = {"optimizer.lr": "tag(log, interval(1e-5, 1e-2))", "loss": "choice(ce, ldam)"}
    assert sweep_subdir(3, task, params) == "3_lr-0.000443"  # the command line fixed the loss
    monkeypatch.setenv(SWEEP_ARGS_ENV, "[]")
    assert sweep_subdir(3, task) == "3_loss-ce_lr-0.000443"  # nothing known: all but paths
    assert sweep_subdir(1, ["dataset.scale=[0.5, 1.0]"]) == "1_scale-0.5_1.0"
    # a search key only where the job's loss uses it; two keys of one last part keep their whole names
    searched = ["loss=ce", "search.max_m=0.31415", "search.drw_fraction=0.8", "mixup.prob=0.5"]
    searched.append("trainer.ema.prob=1")
    ce, ldam = ({"loss": {"drw_epoch": None}}, {"loss": {"max_m": 0.5, "drw_epoch": None}})
    assert sweep_subdir(4, searched, None, OmegaConf.create(ce)) == (
        "4_loss-ce_drw_fraction-0.8_mixup.prob-0.5_trainer.ema.prob-1"
    )
    assert "max_m-0.31415" in sweep_subdir(4, searched, None, OmegaConf.create(ldam))
    assert len(sweep_subdir(12, [f"key{i}=value{i}" for i in range(30)])) == NAME_LIMIT
    parser = OverridesParser.create()
    for name in (sweep_subdir(1, ["dataset.scale=[0.5, 1.0]"]), "0_loss=ce", "it's, a b"):
        path = f"/runs/{name}/checkpoints/last.pt"  # any folder, even one a user named so
        assert parser.parse_overrides([hydra_override("checkpoint", path)])[0].value() == path


def test_a_submitit_task_is_described_as_torchrun_would_describe_it(monkeypatch, tmp_path):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(name, "")  # so that monkeypatch removes what the test sets
        monkeypatch.delenv(name)
    job = {"EXECUTOR": "local", "LOCAL_NTASKS": "2", "LOCAL_GLOBALID": "1", "LOCAL_LOCALID": "1"}
    job |= {"LOCAL_NODEID": "0", "LOCAL_JOB_NUM_NODES": "1", "LOCAL_JOB_ID": "4242"}
    for key, value in job.items():
        monkeypatch.setenv(f"SUBMITIT_{key}", value)
    cluster.adopt_job_environment()
    assert [os.environ[k] for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR")] == [
        "1",
        "1",
        "2",
        "127.0.0.1",
    ]
    port = os.environ["MASTER_PORT"]
    monkeypatch.delenv("WORLD_SIZE")
    cluster.adopt_job_environment()
    assert os.environ["MASTER_PORT"] == port  # the same job (requeued too) meets on the same port

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    assert cluster.resume_setting(None, run) is None
    RunFolder(run).requeue_mark.write_text("stopped by SIGUSR2\n")
    assert cluster.resume_setting(None, run) == "auto"
    assert cluster.resume_setting("elsewhere/last.pt", run) == "elsewhere/last.pt"
    monkeypatch.delenv("SUBMITIT_EXECUTOR")
    assert cluster.resume_setting(None, run) is None  # outside a submitit job the mark means nothing
