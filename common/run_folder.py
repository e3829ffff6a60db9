"""The files and folders of a run and of a sweep, named once.

Every module that reads or writes a run's files asks ``RunFolder`` (or ``SweepFolder``) for the
path, so the layout README documents is spelled here only::

    RUN/checkpoints/last.pt, best.pt     RUN/metrics.csv, per_class.csv, metrics.json
    RUN/classes.csv, split.csv           RUN/galleries/<model>_epoch<N>.png
    RUN/tensorboard/                     RUN/report.html, train.log, .hydra/

No torch here: the shell checks a run directory before any library loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CHECKPOINTS = "checkpoints"
LAST, BEST = "last.pt", "best.pt"
HYDRA = ".hydra"
TRAIN_LOG = "train.log"
REPORT = "report.html"
LAST_SHOWN = f"{CHECKPOINTS}/{LAST}"  # as messages name it, relative to the run folder
MLFLOW_ARTIFACTS = "mlartifacts"  # beside a SQLite MLflow store: copies of runs' files, not runs


@dataclass(frozen=True)
class RunFolder:
    """One run's folder (``hydra.run.dir``, or a sweep's job folder) and the paths in it."""

    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def last(self) -> Path:
        """The checkpoint a resume continues from (each epoch's, or mid-epoch on a signal)."""
        return self.checkpoints / LAST

    @property
    def best(self) -> Path:
        """The checkpoint of the best monitored epoch."""
        return self.checkpoints / BEST

    @property
    def requeue_mark(self) -> Path:
        """Left by a cluster job that requeued itself, so the next start resumes."""
        return self.checkpoints / "requeued"

    @property
    def metrics_csv(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def per_class_csv(self) -> Path:
        return self.root / "per_class.csv"

    @property
    def metrics_json(self) -> Path:
        """The best epoch's validation and best.pt's test results."""
        return self.root / "metrics.json"

    @property
    def classes_csv(self) -> Path:
        return self.root / "classes.csv"

    @property
    def split_csv(self) -> Path:
        """The recorded carved split: which image validated, which trained."""
        return self.root / "split.csv"

    @property
    def galleries(self) -> Path:
        return self.root / "galleries"

    def gallery(self, model: str, epoch: int) -> Path:
        """The error gallery of ``model`` (``val``, ``val_ema``) at ``epoch``."""
        return self.galleries / f"{model}_epoch{epoch:03d}.png"

    def best_gallery(self, model: str) -> Path:
        """The error gallery of ``model`` at the epoch best.pt holds, drawn when training ends."""
        return self.galleries / f"{model}_best.png"

    def predictions(self, name: str) -> Path:
        """``RUN/predictions/<name>.csv``: predict.py's rows for one input, by default."""
        return self.root / "predictions" / f"{name}.csv"

    def evaluation(self, name: str) -> Path:
        """The folder of one evaluate.py run on this run's checkpoint."""
        return self.root / "evaluations" / name

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def report(self) -> Path:
        return self.root / REPORT

    @property
    def train_log(self) -> Path:
        return self.root / TRAIN_LOG

    @property
    def hydra(self) -> Path:
        """Hydra's record of the launch: config.yaml, overrides.yaml, hydra.yaml."""
        return self.root / HYDRA

    @property
    def config_yaml(self) -> Path:
        return self.hydra / "config.yaml"

    @property
    def overrides_yaml(self) -> Path:
        return self.hydra / "overrides.yaml"

    def earlier_run(self) -> Path | None:
        """The first file that shows an earlier run trained here, or None."""
        for path in (self.last, self.best, self.metrics_csv):
            if path.is_file():
                return path
        return None

    @staticmethod
    def of_checkpoint(checkpoint: str | Path) -> RunFolder | None:
        """The run a checkpoint belongs to (``RUN/checkpoints/x.pt`` -> RUN), if it has that layout."""
        parent = Path(checkpoint).resolve().parent
        return RunFolder(parent.parent) if parent.name == CHECKPOINTS else None


# Hydra writes these into a run folder before train.py runs
HYDRA_OWN = frozenset({HYDRA, TRAIN_LOG})


@dataclass(frozen=True)
class SweepFolder:
    """A sweep's folder (``hydra.sweep.dir``): its jobs' folders and the sweep's own files."""

    root: Path

    @property
    def results_csv(self) -> Path:
        """One row per job: its settings, its best monitored value, which is best."""
        return self.root / "sweep_results.csv"

    @property
    def multirun_yaml(self) -> Path:
        return self.root / "multirun.yaml"

    @property
    def fold_summary_csv(self) -> Path:
        return self.root / "fold_summary.csv"

    @property
    def fold_summary_json(self) -> Path:
        return self.root / "fold_summary.json"

    @property
    def report(self) -> Path:
        return self.root / REPORT

    def is_sweep(self) -> bool:
        return self.results_csv.exists() or self.multirun_yaml.exists()
