"""MLflow: one MLflow run per training run, in a local SQLite store under ``outputs/`` by default.

Params: the run's config, flattened (``optimizer.lr``), plus the command-line overrides (what a
resume changes, the tag ``changed_after_epoch_N``); metrics:
every scalar of every epoch with step = epoch under its name (``val/balanced_acc``), among them
``best/<monitor>``, the best so far (a name MLflow does not take, such as a class ``c+``'s
per-class recall, gets a unique key, ``metric_key``; the artifact ``metric_keys.json`` maps them
back); tags: the run folder, the git commit if any, the keys a sweep varies. Artifacts at the
end: the final confusion picture, ``metrics.csv``, ``classes.csv``, ``.hydra/``, the galleries,
and with ``log_checkpoints`` best.pt and last.pt, kept in ``mlartifacts/`` beside a SQLite
store; the files train.py writes after the fit (metrics.json, per_class.csv, report.html) join a
FINISHED run through ``attach``. A sweep is one MLflow
experiment, named by the user or after the sweep's folder, with one run per job. A resumed (or
requeued) run continues its MLflow run: the run's id is kept in ``RUN/.mlflow_run``; epochs that
run holds beyond the checkpoint (logged before a kill) are not logged again.

MLflow 3 refuses its old file store (``./mlruns``), so the default is ``sqlite:///outputs/mlflow.db``;
it needs SQLAlchemy, which the Optuna sweeper already brings. Jobs of a sweep starting together
create and migrate a new SQLite store, and its experiment, one at a time (under an ``flock`` on
``<store>.lock``): two at once would race in MLflow's schema migration. ``mlflow ui`` (the full ``mlflow``
package) shows it: ``mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.files import LOCK_PATIENCE, exclusive, sqlite_file, sqlite_problem
from common.nested import flatten
from common.run_folder import MLFLOW_ARTIFACTS, RunFolder
from common.signals import Interrupted
from trainer.loggers.base import EpochRecord, RunInfo
from trainer.results import FitSummary

RUN_ID_FILE = ".mlflow_run"
KEYS_FILE = "metric_keys.json"  # an artifact: which key holds which series, where a name was changed
UNSAFE_NAME = re.compile(r"[^\w\-. /:]")  # what MLflow accepts in a metric or param name
PARAM_LENGTH = 6000  # MLflow's limit on a param's value
TAG_LENGTH = 8000  # and on a tag's
EXPERIMENT_LENGTH = 500  # and on an experiment's name
LAUNCH_KEYS = ("resume", "overwrite")  # how a launch starts (resume, resume_accept_changes), not the run
SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "file")
# A tracking server that stops answering: MLflow's own patience (7 retries, up to 2 minutes
# each, about 4 minutes a call) would hold the epoch's record, and with it the next checkpoint,
# that long; these give up after about 15 s (a connection refused) or 30 s (no answer), and the
# logger is dropped for the rest of the run. Environment variables set by the user win.
HTTP_PATIENCE = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def safe_name(name: str) -> str:
    """A metric or param name MLflow accepts: other characters (a class name's ``\\xNN``) become ``_``."""
    return UNSAFE_NAME.sub("_", name)[:250]


def metric_key(name: str) -> str:
    """``name`` as MLflow's key, unique and stable: a name MLflow takes as it is stays, one it does
    not (a class named ``c+``) gets ``_`` for each other character and a short hash of the name, so
    that ``c+`` and ``c#`` never merge into one series."""
    safe = safe_name(name)
    if safe == name:
        return name
    return f"{safe[:240]}_{hashlib.sha1(name.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"


def deleted_experiment(store: Path, name: str) -> str | None:
    """The id of the experiment ``name`` if the SQLite store holds it deleted; read without MLflow."""
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=LOCK_PATIENCE) as db:
            row = db.execute(
                "SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = 'deleted'",
                (name,),
            ).fetchone()
    except sqlite3.Error:  # not MLflow's store yet, or damaged: the check at opening says it
        return None
    return None if row is None else str(row[0])


def git_commit(folder: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class MLflowLogger:
    """An MLflow run in ``tracking_uri`` (default: ``sqlite:///outputs/mlflow.db``), experiment
    ``experiment`` (default: the sweep's folder name for sweep jobs, else ``train``)."""

    name = "mlflow"

    def __init__(
        self, tracking_uri: str | None = None, experiment: str | None = None, log_checkpoints: bool = False
    ) -> None:
        if importlib.util.find_spec("mlflow") is None:
            raise UserError("logger=mlflow needs the mlflow-skinny package: pip install mlflow-skinny.")
        if tracking_uri is not None and not str(tracking_uri).strip():
            raise UserError(
                "logger.mlflow.tracking_uri='' is empty: give an MLflow URI, or null for the default."
            )
        scheme = str(tracking_uri).partition(":")[0] if tracking_uri and ":" in str(tracking_uri) else None
        if scheme is not None and scheme not in SCHEMES:
            raise UserError(
                f"logger.mlflow.tracking_uri={tracking_uri!r}: MLflow stores are {', '.join(SCHEMES)} URIs "
                f"(e.g. sqlite:///outputs/mlflow.db, http://host:5000), or null for the default."
            )
        file_store = tracking_uri is not None and scheme in (None, "file")
        if file_store and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("true", "1"):
            folder = str(tracking_uri).removeprefix("file://").rstrip("/")
            raise UserError(
                f"logger.mlflow.tracking_uri={tracking_uri!r} is MLflow's file store (a folder), which "
                f"MLflow 3 no longer opens: give a database such as sqlite:///{folder}/mlflow.db or a "
                f"server (http://host:5000); MLFLOW_ALLOW_FILE_STORE=true opens it anyway."
            )
        if experiment is not None and not str(experiment).strip():
            raise UserError("logger.mlflow.experiment='' is empty: give a name, or null for the default.")
        if experiment is not None and len(str(experiment)) > EXPERIMENT_LENGTH:
            raise UserError(
                f"logger.mlflow.experiment is {len(str(experiment))} characters long; MLflow takes at most "
                f"{EXPERIMENT_LENGTH}."
            )
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.log_checkpoints = log_checkpoints
        self.client: Any = None
        self.run_id: str | None = None
        self.renamed: dict[str, str] = {}  # MLflow's key -> the series' own name, where they differ
        self.run: RunInfo | None = None
        self.logged: set[int] = set()  # epochs the resumed MLflow run already holds
        self.finished = False  # the run ended FINISHED: files written after the fit may join it

    def experiment_name(self, sweep_dir: Path | None) -> str:
        return self.experiment or (sweep_dir.name if sweep_dir else "train")

    def check(self, sweep_dir: Path | None) -> None:
        """Before any data is read: an experiment of that name deleted in a local SQLite store (MLflow
        keeps it in its trash, and no run may start in it or take its name) is refused."""
        store = sqlite_file(self.uri())
        name = self.experiment_name(sweep_dir)
        found = deleted_experiment(store, name) if store is not None and store.is_file() else None
        if found is not None:
            raise UserError(
                f"logger.mlflow: the experiment {name!r} (id {found}) in {store} was deleted; MLflow keeps "
                f"it in its trash, where no run may start and no new experiment may take its name. Restore "
                f"it (MLflow's UI, or `mlflow experiments restore --experiment-id {found}`), remove it for "
                f"good (`mlflow gc --backend-store-uri sqlite:///{store}`), or give another "
                f"logger.mlflow.experiment."
            )

    def check_store(self, uri: str) -> None:
        """A local SQLite store that cannot be opened fails now, not after MLflow's minute of retries."""
        path = sqlite_file(uri)
        problem = sqlite_problem(path) if path is not None else None
        if problem:
            raise OSError(f"the SQLite store {path} cannot be used: {problem}")

    @staticmethod
    def artifacts(uri: str) -> str | None:
        """Where a new experiment of a SQLite store keeps its files: ``mlartifacts/`` beside the
        store (MLflow's own default, ``./mlruns``, would follow the working folder); a server
        chooses for itself (None)."""
        path = sqlite_file(uri)
        return None if path is None else (path.parent / MLFLOW_ARTIFACTS).absolute().as_uri()

    def uri(self) -> str:
        if self.tracking_uri:
            if str(self.tracking_uri).startswith(("http:", "https:")):
                for name, value in HTTP_PATIENCE.items():  # unless the user chose otherwise
                    os.environ.setdefault(name, value)
            return str(self.tracking_uri)
        store = Path.cwd() / "outputs" / "mlflow.db"
        store.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{store}"

    def open(self, run: RunInfo, resume_after: int) -> None:
        import logging

        from mlflow.tracking import MlflowClient

        for chatty in ("alembic", "mlflow"):  # their set-up chatter on a new store
            logging.getLogger(chatty).setLevel(logging.WARNING)
        # each retry of a server that went away; the logger's own warning says it once
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
        self.run = run
        uri = self.uri()
        store = sqlite_file(uri)
        name = self.experiment_name(run.sweep_dir)
        self.check_store(uri)
        with exclusive(store.with_name(f"{store.name}.lock")) if store is not None else nullcontext():
            self.client = MlflowClient(uri)
            found = self.client.get_experiment_by_name(name)  # a new store is created and migrated here
            experiment_id = found.experiment_id if found else self.create_experiment(name, uri)
        id_file = run.run_dir / RUN_ID_FILE
        if resume_after > 0 and id_file.is_file():
            self.run_id = id_file.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")  # the same MLflow run continues
            # epochs it holds beyond the checkpoint (logged before a kill, ahead of last.pt) are
            # trained again to the same numbers: not logged a second time
            history = self.client.get_metric_history(self.run_id, "epoch_time")
            self.logged = {m.step for m in history if m.step > resume_after}
            self.note_changes(run, resume_after)
            return
        tags = {"run_dir": str(run.run_dir), "swept_keys": ",".join(run.varied)}
        commit = git_commit(Path.cwd())
        if commit:
            tags["mlflow.source.git.commit"] = commit
        created = self.client.create_run(experiment_id, run_name=run.run_dir.name, tags=tags)
        self.run_id = created.info.run_id
        id_file.write_text(f"{self.run_id}\n")
        self.log_params(self.params(run))

    def create_experiment(self, name: str, uri: str) -> str:
        """A new experiment ``name``, or the one another job of the sweep created meanwhile (a
        tracking server takes jobs at once; the SQLite store's lock does not reach it)."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(name, self.artifacts(uri))
        except MlflowException as err:
            found = self.client.get_experiment_by_name(name)
            if err.error_code != "RESOURCE_ALREADY_EXISTS" or found is None:
                raise
            return found.experiment_id

    @staticmethod
    def params(run: RunInfo) -> dict[str, str]:
        params = {safe_name(k): str(v)[:PARAM_LENGTH] for k, v in flatten(run.config).items()}
        params |= {safe_name(group): option for group, option in run.choices.items()}  # loss: ldam
        params["overrides"] = " ".join(run.overrides)[:PARAM_LENGTH] or "none"
        return params

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def note_changes(self, run: RunInfo, resume_after: int) -> None:
        """A resume on other settings (``resume_accept_changes``, a longer ``trainer.epochs``):
        MLflow keeps a param's first value, so the changes go to the tag
        ``changed_after_epoch_N`` (``key: old -> new; ...``); keys the run lacked become params."""
        held = self.client.get_run(self.run_id).data.params
        now = self.params(run)
        changed = [
            f"{key}: {held[key]} -> {value}"
            for key, value in now.items()
            if key in held and held[key] != value and key != "overrides" and not key.startswith(LAUNCH_KEYS)
        ]
        if changed:
            self.client.set_tag(
                self.run_id, f"changed_after_epoch_{resume_after}", "; ".join(changed)[:TAG_LENGTH]
            )
        self.log_params({key: value for key, value in now.items() if key not in held})

    def log_epoch(self, record: EpochRecord) -> None:
        from mlflow.entities import Metric

        if record.epoch in self.logged:
            return
        stamp = int(time.time() * 1000)
        keys = {k: metric_key(k) for k in record.scalars}
        renamed = {key: k for k, key in keys.items() if key != k and key not in self.renamed}
        if renamed:  # which series holds which class: keys.json beside the run's other artifacts
            self.renamed |= renamed
            self.client.log_dict(self.run_id, dict(sorted(self.renamed.items())), KEYS_FILE)
        metrics = [Metric(keys[k], float(v), stamp, record.epoch) for k, v in record.scalars.items()]
        metrics.append(Metric("epoch_time", record.epoch_time, stamp, record.epoch))
        for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics a batch
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])

    def close(self, summary: FitSummary | None) -> None:
        if self.client is None or self.run_id is None or self.run is None:
            return
        if summary is None:  # stopped early; a resume continues this MLflow run
            # called while the stop propagates (the loop's ``finally``): a signal is KILLED, as
            # MLflow's own UI names a run someone stopped; an error (a NaN loss, a crash) FAILED
            stop = sys.exc_info()[1]
            killed = isinstance(stop, (Interrupted, KeyboardInterrupt))
            self.client.set_terminated(self.run_id, status="KILLED" if killed else "FAILED")
            return
        try:
            self.log_artifacts(summary)
        except Exception:  # a full disk, a server gone: the run ends FAILED, not RUNNING forever
            self.client.set_terminated(self.run_id, status="FAILED")
            raise
        self.client.set_terminated(self.run_id, status="FINISHED")
        self.finished = True

    def attach(self, paths: Sequence[Path]) -> None:
        """Files written after the fit (metrics.json, report.html, which MLflow's UI previews) added
        to the run's artifacts; a run that ended FAILED or KILLED, or never opened, gets none."""
        if not self.finished:
            return
        for path in paths:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))

    def log_artifacts(self, summary: FitSummary) -> None:
        from trainer.evaluation.figures import confusion_image

        assert self.run is not None
        folder = RunFolder(self.run.run_dir)
        for path in (folder.metrics_csv, folder.train_log, folder.classes_csv):
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        if folder.galleries.is_dir():
            self.client.log_artifacts(self.run_id, str(folder.galleries), artifact_path=folder.galleries.name)
        if folder.hydra.is_dir():
            self.client.log_artifacts(self.run_id, str(folder.hydra), artifact_path=folder.hydra.name)
        if summary.final:
            with tempfile.TemporaryDirectory() as tmp:
                for prefix, result in summary.final.items():
                    path = Path(tmp) / f"{prefix}_confusion_matrix.png"
                    title = f"{prefix} epoch {summary.epoch}"
                    confusion_image(result.confusion_matrix, self.run.class_names, title, scale=2).save(path)
                    self.client.log_artifact(self.run_id, str(path))
        if self.log_checkpoints:
            for path in (folder.best, folder.last):
                if path.is_file():
                    self.client.log_artifact(self.run_id, str(path), folder.checkpoints.name)
