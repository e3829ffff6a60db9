"""logger=mlflow against a real MLflow tracking server (``mlflow server``, SQLite backend, served
artifacts), started by the tests: jobs of a sweep logging at once, and a server that stops
while a run trains.

The server is MLflow's full package in a virtual environment of its own (``make test-cluster``
puts it in .cache/mlflow-server, or MLFLOW_SERVER_BIN names one): a lab's server is a separate
installation, and MLflow's server needs SQLAlchemy 2 where the Optuna sweeper holds 1.4 here.
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT
from helpers.sweeps import command
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.mlflow_server

SERVER_BIN = Path(os.environ.get("MLFLOW_SERVER_BIN", ROOT / ".cache" / "mlflow-server" / "bin" / "mlflow"))
TREE = ["dataset=imagefolder", "dataset.batch_size=4"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


class Server:
    """``mlflow server`` on 127.0.0.1, its store and artifacts under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        argv = [str(SERVER_BIN), "server", "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}"]
        argv += ["--artifacts-destination", str(self.folder / "artifacts"), "--workers", "1"]
        log = (self.folder / "server.log").open("a")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.proc.poll() is None, (self.folder / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"the MLflow server did not answer in 120 s: {self.folder / 'server.log'}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its workers
            self.proc.wait(timeout=60)


@pytest.fixture
def server(tmp_path):
    if not SERVER_BIN.is_file():
        pytest.skip(f"no MLflow server at {SERVER_BIN}: make test-cluster installs one")
    running = Server(tmp_path / "server")
    running.start()
    yield running
    running.stop()


def metrics_rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_two_jobs_of_a_sweep_log_to_one_server_at_once(server, image_tree, tmp_path):
    sweep = tmp_path / "faces-sweep"
    out = subprocess.run(
        command(
            "-m",
            "hydra/launcher=submitit_local",  # both jobs at once, each its own process
            *TREE,
            f"dataset.root={image_tree}",
            "loss=ce,focal",
            "trainer.epochs=2",
            "logger=[csv,mlflow]",
            f"logger.mlflow.tracking_uri={server.uri}",
            f"hydra.sweep.dir={sweep}",
        ),
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(server.uri)
    runs = client.search_runs([client.get_experiment_by_name("faces-sweep").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["0_loss-ce", "1_loss-focal"]
    for found in runs:
        run = sweep / found.info.run_name
        assert found.info.status == "FINISHED" and found.data.tags["run_dir"] == str(run)
        history = client.get_metric_history(found.info.run_id, "val/balanced_acc")
        rows = metrics_rows(run)
        assert [m.step for m in history] == [1, 2]  # every epoch, once
        assert [m.value for m in history] == pytest.approx(
            [float(r["val_balanced_acc"]) for r in rows], abs=1e-6
        )
        names = {a.path for a in client.list_artifacts(found.info.run_id)}
        assert {"metrics.csv", "train.log", ".hydra", "val_confusion_matrix.png"} <= names
        copy = Path(client.download_artifacts(found.info.run_id, "metrics.csv", str(tmp_path / run.name)))
        assert copy.read_bytes() == (run / "metrics.csv").read_bytes()
    assert (server.folder / "artifacts").is_dir()  # uploaded through the server, not written by the jobs


def test_a_server_that_stops_mid_run_does_not_stop_training_and_nothing_is_duplicated(
    server, image_tree, tmp_path
):
    run = tmp_path / "run"
    line = command(
        *TREE,
        f"dataset.root={image_tree}",
        "trainer.epochs=8",
        "logger=[csv,mlflow]",
        f"logger.mlflow.tracking_uri={server.uri}",
        f"hydra.run.dir={run}",
    )
    proc = subprocess.Popen(
        line, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    client = MlflowClient(server.uri)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        found = client.search_runs([e.experiment_id for e in client.search_experiments()])
        if found and client.get_metric_history(found[0].info.run_id, "val/balanced_acc"):
            break  # epoch 1 is on the server
        time.sleep(0.2)
    run_id = found[0].info.run_id
    server.stop()
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert len(metrics_rows(run)) == 8  # training went on to the end
    log = (run / "train.log").read_text()
    assert log.count("Logger mlflow failed") == 1 and "training goes on" in log
    assert "Logger mlflow went off at epoch" in log and "its record of this run is incomplete" in log
    assert "Traceback" not in out and "Retrying" not in out  # urllib3's retries are not the user's news

    server.start()  # the same store: what reached it before the stop, each epoch once
    steps = [m.step for m in MlflowClient(server.uri).get_metric_history(run_id, "val/balanced_acc")]
    assert steps and steps == sorted(set(steps)) and steps[0] == 1 and steps[-1] < 8
