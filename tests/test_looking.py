"""Looking at results without being misled: one HParams row per run, the sweep's table, the
default monitor, post-hoc numbers where people look, plain progress in files, TensorBoard's order."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import yaml
from conftest import SHRINK, compose_config, make_tree
from helpers.runs import run_train
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, backend_context
from tensorboard.plugins.hparams import metadata as hparams_metadata

from trainer import console
from trainer.results import HEADLINE, TRAINING, board_tag, monitorable, tag


def session(run: Path) -> tuple[str, dict]:
    """The HParams trial id (group name) and values a run's event file records."""
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    content = events.PluginTagToContent(hparams_metadata.PLUGIN_NAME)[hparams_metadata.SESSION_START_INFO_TAG]
    start = hparams_metadata.parse_session_start_info_plugin_data(content)
    values = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
    return start.group_name, values


def hparams_table(runs: list[Path]) -> list[api_pb2.HParamInfo]:
    """The columns TensorBoard's HParams tab computes for a logdir of these runs (its own code)."""
    contents = {}
    for run in runs:
        events = EventAccumulator(str(run / "tensorboard"))
        events.Reload()
        contents[str(run)] = events.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    assert not any(hparams_metadata.EXPERIMENT_TAG in c for c in contents.values())  # no run's record wins
    return backend_context.Context(None)._compute_hparam_infos(contents)


def test_two_sweeps_in_one_logdir_are_one_row_per_run_and_each_ends_with_its_table(image_tree, tmp_path):
    logs = tmp_path / "outputs"
    common = [*SHRINK, "dataset=imagefolder", f"dataset.root={image_tree}", "dataset.batch_size=4"]
    first = run_train("-m", *common, "loss=ce,ldam", f"hydra.sweep.dir={logs / 'a'}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    # the second sweep's output goes to a pipe with progress bars asked for: plain lines, no frames
    swept = ["trainer.progress=true", "loss=ce", "seed=0,1", f"hydra.sweep.dir={logs / 'b'}"]
    second = run_train("-m", *common, *swept, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "\r" not in second.stdout + second.stderr and "\x1b[" not in second.stdout + second.stderr
    jobs = [logs / "a" / "0_loss-ce", logs / "a" / "1_loss-ldam"]
    jobs += [logs / "b" / "0_seed-0", logs / "b" / "1_seed-1"]
    rows = dict(session(job) for job in jobs)
    ids = [f"{job.name} ({job.parent.relative_to(tmp_path)})" for job in jobs]
    assert sorted(rows) == sorted(ids)  # four rows, never merged into averages
    losses = [rows[f"{j} (outputs/a)"]["loss"] for j in ("0_loss-ce", "1_loss-ldam")]
    assert losses == ["ce", "ldam"]  # the group option, as typed
    assert all(set(rows[i]) == set(rows[ids[0]]) for i in ids[2:])  # one key set: each difference shows
    assert [rows[i]["seed"] for i in ids] == [0, 0, 0, 1]
    columns = {info.name: info.differs for info in hparams_table(jobs)}
    assert columns["loss"] and columns["seed"] and not columns["optimizer.lr"]  # listed first by TensorBoard
    # each sweep ends with its table and a CSV naming the best job
    said = first.stdout + first.stderr
    assert "| job | loss | best val/balanced_acc | SE | epoch |  |" in said and "<- best" in said
    table = list(csv.DictReader((logs / "a" / "sweep_results.csv").open()))
    assert [Path(r["folder"]).name for r in table] == ["0_loss-ce", "1_loss-ldam"]
    assert sum(int(r["is_best"]) for r in table) == 1
    assert all(r["monitor"] == "val/balanced_acc" and float(r["se"]) > 0 for r in table)
    best = max(table, key=lambda r: float(r["best"]))
    assert best["is_best"] == "1" and f"Best: {best['folder']}" in said
    # the config, resolved, once at the start of train.log; the best epoch's table shows the post-hoc number
    log = (jobs[0] / "train.log").read_text()
    assert log.count("Config, resolved") == 1 and "  monitor: val/balanced_acc" in log
    assert "best.pt: the epoch of highest val/balanced_acc (trainer.monitor)" in log
    assert "post-hoc balanced acc." in log and "tau 1)" in log and " adj " in log


def test_a_sweep_jobs_log_names_its_overrides_as_typed_not_as_hydra_escaped_them(tmp_path):
    tree = make_tree(tmp_path / "faces: 2026", {"a": (4, 2), "b": (4, 2)})  # ':' and ' ' get escaped
    swept = [f"dataset.root={tree}", "seed=3", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    done = run_train("-m", *SHRINK, "dataset=imagefolder", "dataset.batch_size=4", *swept, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    [job] = [p for p in (tmp_path / "sweep").iterdir() if p.is_dir()]
    first = (job / "train.log").read_text().split("\n", 1)[0]
    assert f"dataset.root={tree} seed=3" in first and "\\" not in first


def test_best_pt_is_chosen_by_balanced_accuracy_unless_the_users_recipe_says_otherwise():
    assert compose_config().trainer.monitor == "val/balanced_acc"
    rafdb = compose_config(["experiment=rafdb_ldam", "dataset.root=/data"], shrink=False)
    assert rafdb.trainer.monitor == "val/acc"  # as the user's script tracked it


def test_tensorboard_sections_sort_what_compares_runs_first():
    tags = [tag("train", n) for n in TRAINING] + monitorable(ema=True, posthoc=True)
    tags += [board_tag(f"best/{m}") for m in ("val/balanced_acc", "train/loss")]
    tags += [board_tag(f"{m}/confusion_matrix") for m in ("val", "val_ema")]
    ordered = sorted(board_tag(t) for t in tags)
    assert ordered[: len(HEADLINE)] == [f"val/{name}" for name in sorted(HEADLINE)]
    assert ordered[:2] == ["val/balanced_acc", "val/loss"]  # the first row of Time Series' first section
    assert all(t.startswith("z_train/") for t in ordered[-4:])  # training numbers last
    assert board_tag("best/val/balanced_acc") == "val_details/best_balanced_acc"


def test_a_long_epoch_written_to_a_file_says_where_it_is_at_each_quarter(monkeypatch, caplog):
    monkeypatch.setattr(console, "QUIET_SECONDS", 0.0)
    monkeypatch.setattr(console, "on_terminal", lambda: False)
    progress = console.EpochProgress(range(8), "epoch 3/30", enabled=True)
    with caplog.at_level(logging.INFO, logger="trainer.trainer"):
        for step, _ in enumerate(progress, 1):
            progress.show(step, 8, 0.5, 1e-4, step * 4)
    progress.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"epoch 3/30: step {s} of 8, loss 0.5000, lr 1.00e-04" for s in (2, 4, 6)]
    monkeypatch.setattr(console, "QUIET_SECONDS", 1e9)  # a short epoch: its epoch line is enough
    quiet = console.EpochProgress(range(8), "epoch 4/30", enabled=True)
    caplog.clear()
    for step, _ in enumerate(quiet, 1):
        quiet.show(step, 8, 0.5, 1e-4, step * 4)
    assert not caplog.records


@pytest.mark.parametrize(
    ("args", "jobs"),
    [
        (["loss=ce,ldam", "optimizer.lr=1e-3,1e-4"], 4),
        (["seed=range(0,3)"], 3),
        (["hparams_search=longtail"], 1),
        (["hparams_search=longtail", "hydra.sweeper.n_jobs=3"], 3),
    ],
)
def test_local_sweep_jobs_share_the_cores(monkeypatch, args, jobs):
    from trainer.distributed import cpu_threads
    from trainer.shell.sweep import jobs_at_once

    assert jobs_at_once(args) == jobs
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("TRAIN_PARALLEL_JOBS", str(jobs))
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    assert cpu_threads(None, 0) == max(1, 8 // jobs)
    assert cpu_threads(3, 0) == 3  # trainer.num_threads given: as given
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")  # a job on a node of its own
    assert cpu_threads(None, 0) == 8


def test_the_sweep_table_reads_each_job_from_its_folder(tmp_path):
    from trainer.shell.sweep_table import summarise, table

    def job(name: str, loss: dict, overrides: list[str], rows: list[str] | None) -> None:
        folder = tmp_path / name / ".hydra"
        folder.mkdir(parents=True)
        config = {"loss": loss, "trainer": {"monitor": "val/loss", "monitor_mode": "min"}}
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        (folder / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        if rows is not None:
            (tmp_path / name / "metrics.csv").write_text("epoch,val_loss\n" + "\n".join(rows) + "\n")

    job("0_loss-ce", {"drw_epoch": None}, ["loss=ce", "search.max_m=0.3"], ["1,0.9", "2,0.7", "3,nan"])
    job("1_loss-ldam", {"max_m": 0.5}, ["loss=ldam", "search.max_m=0.31415926"], ["1,0.8"])
    job("2_loss-focal", {"gamma": 2}, ["loss=focal", "search.max_m=0.4"], None)  # failed before an epoch
    (tmp_path / "optuna.db").write_text("")  # not a job
    jobs, best = summarise(tmp_path, {"loss", "search.max_m"})
    assert [j.folder.name for j in jobs] == ["0_loss-ce", "1_loss-ldam", "2_loss-focal"]
    assert best is jobs[0] and (best.best, best.best_epoch) == (0.7, 2)  # lowest val/loss, NaN passed over
    lines = table(jobs, best).splitlines()
    assert lines[2] == "| 0_loss-ce | ce | - | 0.7000 | 2 | <- best |"  # no margin in a CE job
    assert lines[3] == "| 1_loss-ldam | ldam | 0.3142 | 0.8000 | 1 |  |"
    assert lines[4] == "| 2_loss-focal | focal | - | no epoch |  |  |"
