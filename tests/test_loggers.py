"""The logger group: TensorBoard and metrics.csv by default, MLflow on request, read back with
MLflow's own client; a failing logger never stops training; a bad setting is refused early."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SHRINK, compose_config, make_tree
from mlflow.tracking import MlflowClient

from common.errors import UserError
from train import train

TREE = ["dataset=imagefolder", "dataset.batch_size=4"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "tree", {"a": (8, 3), "b": (6, 3), "c": (4, 3)})


def column(run: Path, name: str) -> list[float]:
    with (run / "metrics.csv").open(newline="") as f:
        return [float(row[name]) for row in csv.DictReader(f)]


def test_mlflow_gets_params_every_epochs_metrics_and_artifacts_and_a_resume_continues_its_run(tree, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = [
        *TREE,
        f"dataset.root={tree}",
        "logger=[tensorboard,csv,mlflow]",
        f"logger.mlflow.tracking_uri={store}",
    ]
    run = tmp_path / "run"
    train(compose_config([*common, "trainer.epochs=2"]), run)
    client = MlflowClient(store)
    [found] = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert found.info.run_name == "run" and found.info.status == "FINISHED"
    assert (
        found.data.params["optimizer.lr"] == "0.001"
        and found.data.params["loss._target_"] == "losses.CrossEntropyLoss"
    )
    history = client.get_metric_history(found.info.run_id, "val/balanced_acc")
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx(column(run, "val_balanced_acc"), abs=1e-5)
    assert "val_per_class/a" in found.data.metrics and "best/val/balanced_acc" in found.data.metrics
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"metrics.csv", "val_confusion_matrix.png", "val_ema_confusion_matrix.png"} <= artifacts
    assert {"metrics.json", "per_class.csv", "classes.csv", "galleries"} <= artifacts  # and the pictures
    assert "val_best.png" in {
        Path(a.path).name for a in client.list_artifacts(found.info.run_id, "galleries")
    }
    assert list((tmp_path / "mlartifacts").rglob("val_confusion_matrix.png"))  # beside the store
    assert (run / "tensorboard").is_dir() and (run / "metrics.csv").is_file()
    after_two = (run / "checkpoints" / "last.pt").read_bytes()

    train(compose_config([*common, "trainer.epochs=3", "resume=auto"]), run)
    [again] = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert again.info.run_id == found.info.run_id and again.info.status == "FINISHED"  # the same run
    assert (
        again.data.tags["changed_after_epoch_2"] == "trainer.epochs: 2 -> 3"
    )  # MLflow keeps params' first values
    assert again.data.params["trainer.epochs"] == "2"
    assert [m.step for m in client.get_metric_history(found.info.run_id, "val/balanced_acc")] == [1, 2, 3]

    # killed after epoch 3 reached MLflow but before its last.pt: the resume trains epoch 3 again
    (run / "checkpoints" / "last.pt").write_bytes(after_two)
    train(compose_config([*common, "trainer.epochs=3", "resume=auto"]), run)
    history = client.get_metric_history(found.info.run_id, "val/balanced_acc")
    assert [m.step for m in history] == [1, 2, 3]  # once each


def test_a_sweep_is_one_mlflow_experiment_with_a_run_per_job(tree, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = tmp_path / "faces-search"
    args = [
        "-m",
        *SHRINK,
        *TREE,
        f"dataset.root={tree}",
        "loss=ce,focal",
        "logger=[csv,mlflow]",
        f"logger.mlflow.tracking_uri={store}",
        f"hydra.sweep.dir={sweep}",
        "trainer.report=true",
    ]
    out = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("faces-search").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["0_loss-ce", "1_loss-focal"]
    assert {r.data.tags["swept_keys"] for r in runs} == {"loss"}
    assert {r.data.params["loss._target_"] for r in runs} == {"losses.CrossEntropyLoss", "losses.FocalLoss"}
    assert {r.data.params["loss"] for r in runs} == {"ce", "focal"}  # the options as typed
    assert {r.data.params["model"] for r in runs} == {"convnextv2"}
    for found in runs:  # the run's report (MLflow's UI previews HTML) and its end numbers
        artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
        assert {"report.html", "metrics.json"} <= artifacts, artifacts
    assert not (sweep / "0_loss-ce" / "tensorboard").exists()  # only the loggers chosen


def test_a_failing_logger_is_named_once_and_training_goes_on(tree, tmp_path, caplog):
    folder = tmp_path / "a-folder-not-a-database"
    folder.mkdir()
    cfg = compose_config(
        [
            *TREE,
            f"dataset.root={tree}",
            "logger=[csv,mlflow]",
            f"logger.mlflow.tracking_uri=sqlite:///{folder}",
        ]
    )
    train(cfg, tmp_path / "run")
    assert "Logger mlflow failed" in caplog.text and "training goes on" in caplog.text
    end = caplog.text.rsplit("epoch 1/1", 1)[-1]  # after the last epoch, the run's end names it again
    assert "Logger mlflow went off at opening (" in end and "record of this run is incomplete" in end
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file() and column(tmp_path / "run", "epoch") == [
        1.0
    ]
    ended = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert ended["loggers_off"]["mlflow"].startswith("opening (OSError: the SQLite store")


def test_a_sweep_table_names_a_logger_that_went_off_in_a_job(tree, tmp_path):
    folder = tmp_path / "a-folder-not-a-database"
    folder.mkdir()
    mlflow = ["logger=[csv,mlflow]", f"logger.mlflow.tracking_uri=sqlite:///{folder}"]
    args = [
        "-m",
        *SHRINK,
        *TREE,
        f"dataset.root={tree}",
        *mlflow,
        "seed=0",
        f"hydra.sweep.dir={tmp_path / 's'}",
    ]
    out = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    said = out.stdout + out.stderr
    table_at = said.index("The sweep's 1 job(s)")
    assert said.index(": logger mlflow went off at opening (OSError: the SQLite store") > table_at


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("logger.mlflow.experiment=''", "logger.mlflow.experiment='' is empty"),
        (
            "logger.mlflow.tracking_uri=nosuch://x",
            "logger.mlflow.tracking_uri='nosuch://x': MLflow stores are",
        ),
        (
            "logger.mlflow.tracking_uri=/data/mlruns",
            "is MLflow's file store .* sqlite:////data/mlruns/mlflow.db",
        ),
        ("logger.mlflow.tracking_uri='file:///data/mlruns'", "MLflow 3 no longer opens"),
        (f"logger.mlflow.experiment={'x' * 501}", "501 characters long; MLflow takes at most 500"),
    ],
)
def test_a_bad_logger_setting_is_refused_before_data_is_read(tmp_path, override, words):
    nowhere = ["dataset=imagefolder", f"dataset.root={tmp_path / 'nowhere'}"]  # a scan would fail first
    with pytest.raises(UserError, match=words):
        train(compose_config([*nowhere, "logger=[mlflow]", override]), tmp_path / "run")


def test_a_deleted_mlflow_experiment_is_refused_before_data_is_read(tmp_path):
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store)
    client.delete_experiment(client.create_experiment("faces"))
    client.create_experiment("kept")
    nowhere = ["dataset=imagefolder", f"dataset.root={tmp_path / 'nowhere'}"]  # a scan would fail first
    mlflow = ["logger=[mlflow]", f"logger.mlflow.tracking_uri={store}"]
    words = r"the experiment 'faces' \(id 1\) in .*mlflow.db was deleted.*restore --experiment-id 1"
    with pytest.raises(UserError, match=words):
        train(compose_config([*nowhere, *mlflow, "logger.mlflow.experiment=faces"]), tmp_path / "run")
    with pytest.raises(UserError, match="dataset.root="):  # an experiment in use passes to the data scan
        train(compose_config([*nowhere, *mlflow, "logger.mlflow.experiment=kept"]), tmp_path / "run")


THROWAWAY = '''
"""A logger backend written outside the project: one module, the Logger protocol."""
import json


class JsonLines:
    name = "jsonl"

    def __init__(self, filename: str) -> None:
        self.filename = filename

    def open(self, run, resume_after):
        self.path = run.run_dir / self.filename

    def log_epoch(self, record):
        with self.path.open("a") as f:
            f.write(json.dumps({"epoch": record.epoch, **record.scalars}) + "\\n")

    def close(self, summary):
        with self.path.open("a") as f:
            f.write(json.dumps({"best": summary.best_metric}) + "\\n")
'''


def test_a_logger_backend_is_one_module_and_one_setting(tree, tmp_path, monkeypatch):
    import json

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "jsonl_logger.py").write_text(THROWAWAY)
    monkeypatch.syspath_prepend(str(tmp_path / "mine"))
    run = tmp_path / "run"
    backend = ["+logger.jsonl._target_=jsonl_logger.JsonLines", "+logger.jsonl.filename=epochs.jsonl"]
    summary = train(compose_config([*TREE, f"dataset.root={tree}", "trainer.epochs=2", *backend]), run)
    lines = [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]
    assert [line.get("epoch") for line in lines] == [1, 2, None]
    assert lines[1]["val/gmean"] == pytest.approx(summary.final["val"].gmean)
    assert lines[-1]["best"] == summary.best_metric
    assert (run / "metrics.csv").is_file()  # beside the default backends


def test_mlflow_keys_of_class_names_it_does_not_take_stay_apart_and_are_mapped(tmp_path):
    import json

    tree = make_tree(tmp_path / "tree", {"c+": (4, 2), "c#": (4, 2), "ok": (4, 2)})
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow = ["logger=[csv,mlflow]", f"logger.mlflow.tracking_uri={store}", "trainer.ema.enabled=false"]
    summary = train(compose_config([*TREE, f"dataset.root={tree}", *mlflow]), tmp_path / "run")
    client = MlflowClient(store)
    [found] = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    path = client.download_artifacts(found.info.run_id, "metric_keys.json", str(tmp_path))
    key_of = {name: key for key, name in json.loads(Path(path).read_text()).items()}
    plus, sharp = key_of["val_per_class/c+"], key_of["val_per_class/c#"]
    assert plus != sharp and "val_per_class/ok" not in key_of  # a name MLflow takes keeps its key
    recall = dict(zip(summary.class_names, summary.final["val"].acc_per_class, strict=True))
    assert found.data.metrics[plus] == pytest.approx(recall["c+"])
    assert found.data.metrics[sharp] == pytest.approx(recall["c#"])
    assert found.data.metrics["val_per_class/ok"] == pytest.approx(recall["ok"])


def test_tensorboard_records_carry_the_checksums_tensorboard_verifies(tmp_path):
    import numpy as np
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.compat.tensorflow_stub import errors
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as pure_python
    from torch.utils.tensorboard import SummaryWriter

    from trainer.loggers.tensorboard import fast_checksums, masked_crc32c

    for size in (0, 1, 7, 8, 12, 4099):
        data = os.urandom(size)
        assert masked_crc32c(data) == pure_python(data)
    fast_checksums()
    writer = SummaryWriter(str(tmp_path / "tb"))
    writer.add_scalar("val/acc", 0.5, 1)
    writer.add_image("val/picture", np.full((40, 30, 3), 200, dtype=np.uint8), 1, dataformats="HWC")
    writer.close()
    (events,) = (tmp_path / "tb").iterdir()
    read = [v for e in EventFileLoader(str(events)).Load() for v in e.summary.value]
    assert [v.tag for v in read] == ["val/acc", "val/picture"]
    assert read[1].tensor.string_val[:2] == [b"30", b"40"]  # width, height, then the PNG
    assert records(events) == 3  # TensorBoard's own reader checks every record's checksums
    raw = bytearray(events.read_bytes())
    raw[-1] ^= 1  # the last record's checksum, wrong: that reader must notice
    events.write_bytes(bytes(raw))
    with pytest.raises(errors.DataLossError, match="crc32"):
        records(events)


def records(events: Path) -> int:
    """How many records TensorBoard's pure-Python reader reads from ``events``, checksums checked."""
    from tensorboard.compat.tensorflow_stub import errors as tf_errors
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New

    reader, count = PyRecordReader_New(str(events)), 0
    while True:
        try:
            reader.GetNext()
        except tf_errors.OutOfRangeError:
            return count
        count += 1


TOGETHER = """
import sys, time
from pathlib import Path
from mlflow.tracking import MlflowClient  # loaded before the start line: the two opens meet
from trainer.loggers.base import RunInfo
from trainer.loggers.mlflow import MLflowLogger

store, run_dir, me, other = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
run_dir.mkdir()
me.touch()
while not other.exists():
    time.sleep(0.001)
logger = MLflowLogger(f"sqlite:///{store}", experiment="together")
logger.open(RunInfo(run_dir, ["a", "b"], ["val"], {"seed": 0}), 0)
print(logger.run_id)
"""


def test_two_runs_starting_at_once_on_a_new_sqlite_store_both_log_to_it(tmp_path):
    import sqlite3

    store = tmp_path / "store" / "mlflow.db"
    store.parent.mkdir()
    ready = [tmp_path / "ready0", tmp_path / "ready1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    jobs = []
    for i in (0, 1):
        args = [str(store), str(tmp_path / f"run{i}"), str(ready[i]), str(ready[1 - i])]
        command = [sys.executable, "-c", TOGETHER, *args]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        jobs.append(subprocess.Popen(command, cwd=tmp_path, env=env, text=True, **pipes))
    outs = [job.communicate(timeout=300) for job in jobs]
    for job, (_, err) in zip(jobs, outs, strict=True):
        assert job.returncode == 0, err[-3000:]
    client = MlflowClient(f"sqlite:///{store}")
    runs = client.search_runs([client.get_experiment_by_name("together").experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(out.strip() for out, _ in outs)
    with sqlite3.connect(store) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert not [name for name in tables if name.startswith("_alembic_tmp")]  # no half-done migration


def test_an_mlflow_run_stopped_by_a_signal_is_killed_and_one_that_failed_is_failed(tree, tmp_path):
    import signal

    from common.errors import NonFiniteLossError
    from common.signals import Interrupted, StopSignals

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = [
        *TREE,
        f"dataset.root={tree}",
        "loss=ldam",
        "logger=[mlflow]",
        f"logger.mlflow.tracking_uri={store}",
    ]
    stop = StopSignals()
    stop.requested = signal.SIGTERM  # as if it arrived during the first step
    with pytest.raises(Interrupted):
        train(compose_config(common), tmp_path / "stopped", stop)
    with pytest.raises(NonFiniteLossError):
        train(
            compose_config([*common, "model.cosine_scale=1e39"]), tmp_path / "diverged"
        )  # float32 overflows
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert {r.info.run_name: r.info.status for r in runs} == {"stopped": "KILLED", "diverged": "FAILED"}

    full = tmp_path / "full"  # artifacts that cannot be written at the end (a full disk, a file in the way)
    full.mkdir()
    (full / "mlartifacts").write_text("a file where the artifact folder would be")
    elsewhere = [*common[:-1], f"logger.mlflow.tracking_uri=sqlite:///{full / 'mlflow.db'}"]
    train(compose_config(elsewhere), tmp_path / "unstored")  # training itself ends normally
    client = MlflowClient(f"sqlite:///{full / 'mlflow.db'}")
    [unstored] = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert unstored.info.status == "FAILED"  # not RUNNING forever


def test_an_sqlite_store_locked_a_while_by_another_writer_is_waited_for_not_called_damaged(tmp_path):
    import sqlite3
    import threading
    import time

    from common.files import sqlite_problem

    store = tmp_path / "mlflow.db"
    writer = sqlite3.connect(store, check_same_thread=False)
    writer.execute("CREATE TABLE t (x)")
    writer.commit()
    writer.execute("BEGIN EXCLUSIVE")  # another job's migration or batch, for 6 s (sqlite3's own wait is 5)
    release = threading.Timer(6.0, writer.rollback)
    release.start()
    started = time.monotonic()
    try:
        assert sqlite_problem(store) is None
    finally:
        release.join()
        writer.close()
    assert time.monotonic() - started >= 5.5  # it waited for the lock
    (tmp_path / "damaged.db").write_bytes(b"not a database" * 100)
    assert "cannot be read as an SQLite database" in sqlite_problem(tmp_path / "damaged.db")
