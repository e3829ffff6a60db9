"""The metric table: every number a run reports, declared once, and the results of a fit.

Each validation metric is one ``Metric`` in ``METRICS``: its name (an attribute of
``trainer.evaluation.metrics.Evaluation`` and the last part of its tag, ``val/<name>``), the
label people read, which way is better, and where it is shown. Everything else is made from that
table when it is needed: the TensorBoard tags (``board_tag`` places them), metrics.csv's columns,
the HParams metrics, MLflow's keys, the console's epoch line, the end-of-run table, the HTML
report, evaluate.py's metrics.json, the k-fold summary and the values ``trainer.monitor`` (with it
early stopping and best.pt) may choose. A new metric is one line here and its computation in
``Evaluation``. Which model the monitor reads (and so which weights best.pt presents) is
``monitored_model``.
No torch here: the settings check the monitor before any library loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainer.evaluation.metrics import Evaluation


@dataclass(frozen=True)
class Metric:
    """One number of every validation of a model: how it is named, read and shown."""

    name: str  # the attribute of Evaluation; the tag val/<name>, the column val_<name>
    label: str  # as tables, the report and the fold summary name it
    mode: str = "max"  # which way is better: max or min
    share: bool = True  # a share of images (shown in %), or another number (a loss)
    console: str | None = None  # its short name in the epoch line; None: not there
    optional: bool = False  # computed only when its inputs are known; absent (never 0) otherwise
    folds: bool = False  # in a k-fold sweep's summary (mean and sd over the folds)


POSTHOC = "balanced_acc_adjusted"  # with trainer.posthoc_tau set
SHOT_GROUPS = ("many", "medium", "few")
METRICS = (
    Metric("loss", "loss (cross-entropy)", "min", share=False, console="loss"),
    Metric("acc", "accuracy", console="acc"),
    Metric("balanced_acc", "balanced accuracy", console="bal", folds=True),
    Metric("macro_f1", "macro-F1", folds=True),
    Metric("gmean", "G-mean of recalls", console="gm", folds=True),
    Metric("ece", "ECE (calibration error)", "min", share=False),
    Metric(POSTHOC, "post-hoc balanced acc.", console="adj", optional=True),
    Metric("acc_many", "many-shot accuracy", optional=True),
    Metric("acc_medium", "medium-shot accuracy", optional=True),
    Metric("acc_few", "few-shot accuracy", optional=True, folds=True),
)
BY_NAME = {metric.name: metric for metric in METRICS}
# Every validation of a model, per epoch: attributes of trainer.evaluation.metrics.Evaluation.
VALIDATION = tuple(m.name for m in METRICS if not m.optional)
# Computed when their inputs are known (the post-hoc tau, the training counts); else left out.
OPTIONAL = tuple(m.name for m in METRICS if m.optional)
# The training epoch's numbers (TrainStats), as train/<name>.
TRAINING = ("loss", "lr", "images_per_s")
MODELS = ("val", "val_ema")  # the raw model, and its EMA when there is one
PER_CLASS = "_per_class"  # val_per_class/<class>: a section of its own
# Up to this many classes, every class is shown everywhere (per-class curves, the confusion
# picture, the end table); above it, what a reader can take in (the top confused pairs, the
# worst and best classes), so that reporting costs the same for 1,000 classes as for 10.
# Every class's numbers are in RUN/per_class.csv whatever the count.
DETAIL_CLASSES = 30


# TensorBoard sorts its sections (the part of a tag before "/") and the charts of each
# alphabetically, and its first screen shows the first section's first charts: board_tag puts
# what compares runs there (the val section: balanced accuracy, loss, macro-F1), each model's
# other numbers in <model>_details, and the training numbers last (z_train).
HEADLINE = ("balanced_acc", "loss", "macro_f1")
DETAILS = "_details"
TRAINING_SECTION = "z_train"
BEST = "best"  # best/<monitor>: the best value of trainer.monitor so far, each epoch


def validation_names() -> tuple[str, ...]:
    """Every per-model number: ``VALIDATION`` then ``OPTIONAL`` (as they stand when called)."""
    return (*VALIDATION, *OPTIONAL)


def metric(name: str) -> Metric:
    """The declaration of ``name`` (a metric added to ``VALIDATION`` alone gets a plain one)."""
    return BY_NAME.get(name) or Metric(name, name)


def shown(value: float | None, digits: int = 4) -> str:
    """A value for people: ``digits`` decimals, or "absent" for a metric that was not computed."""
    return "absent" if value is None else f"{value:.{digits}f}"


def tag(model: str, name: str) -> str:
    """The TensorBoard tag (and trainer.monitor value) of ``name`` for ``model``: ``val/acc``."""
    return f"{model}/{name}"


def best_tag(monitor: str) -> str:
    """The tag of the best value of ``monitor`` so far: ``best/val/balanced_acc``."""
    return f"{BEST}/{monitor}"


def board_tag(tagged: str) -> str:
    """Where TensorBoard shows a tag (its own name elsewhere): ``val/balanced_acc`` stays,
    ``val/acc`` -> ``val_details/acc``, ``train/lr`` -> ``z_train/lr``, ``best/val/loss`` ->
    ``val_details/best_loss``."""
    section, _, name = tagged.partition("/")
    if section == BEST:
        inner = board_tag(name)
        inner_section, _, inner_name = inner.partition("/")
        if inner_section in MODELS:
            inner_section += DETAILS
        return f"{inner_section}/best_{inner_name}"
    if section == "train":
        return f"{TRAINING_SECTION}/{name}"
    if section in MODELS and name not in HEADLINE:
        return f"{section}{DETAILS}/{name}"
    return tagged


def column(tagged: str) -> str:
    """The metrics.csv column of a tag: ``val/acc`` -> ``val_acc``."""
    return tagged.replace("/", "_")


def monitored_model(monitor: str) -> str:
    """The model whose results ``trainer.monitor`` reads, and so whose weights best.pt presents:
    ``val_ema`` for ``val_ema/...``, else ``val`` (the raw model)."""
    return MODELS[1] if monitor.startswith(f"{MODELS[1]}/") else MODELS[0]


def weights_key(model: str) -> str:
    """The checkpoint's key of a model's weights: ``ema`` for ``val_ema``, ``model`` for ``val``."""
    return "ema" if model == MODELS[1] else "model"


def monitorable(ema: bool, posthoc: bool = False) -> list[str]:
    """Every tag that ``trainer.monitor`` may choose."""
    models = MODELS if ema else MODELS[:1]
    names = [*VALIDATION, POSTHOC] if posthoc else VALIDATION
    return [tag("train", "loss")] + [tag(m, n) for m in models for n in names]


def csv_columns(models: tuple[str, ...] | list[str]) -> list[str]:
    """metrics.csv's columns for the models validated."""
    return [
        "epoch",
        column(tag("train", "loss")),
        "lr",
        *(column(tag(m, n)) for m in models for n in validation_names()),
        "epoch_time",
    ]


@dataclass(frozen=True)
class TrainStats:
    """What one training epoch reports."""

    loss: float  # the mean loss of the epoch's images (each loss's own: compare losses by val/loss)
    lr: float  # the mean lr of the epoch's updates (the largest parameter group's)
    images_per_s: float
    time: float  # seconds
    skipped: int  # unreadable images skipped

    def scalars(self) -> dict[str, float]:
        """``train/<name>`` for each of ``TRAINING``."""
        return {tag("train", name): getattr(self, name) for name in TRAINING}


@dataclass(frozen=True)
class FitSummary:
    """What ``Trainer.fit`` returns: the best monitored value and the last epoch's metrics."""

    final: dict[str, Evaluation] | None  # the last epoch's results per prefix (val, val_ema)
    best: dict[str, Evaluation] | None  # the best epoch's, when this process trained it
    best_metric: float | None
    best_epoch: int | None
    monitor: str
    epoch: int  # the last completed epoch
    class_names: list[str]
    class_counts: list[int]
    stopped_early: str | None = None  # why training stopped before trainer.epochs, if it did
    test: Evaluation | None = None  # best.pt on the held-out test split, evaluated once at the end
    # pictures of the run as best.pt presents it (rank 0): the monitored model -> its error gallery
    pictures: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    loggers_off: dict[str, str] = dataclasses.field(default_factory=dict)  # backend -> when and why

    def with_test(self, test: Evaluation) -> FitSummary:
        return dataclasses.replace(self, test=test)

    def with_pictures(self, pictures: dict[str, Any]) -> FitSummary:
        return dataclasses.replace(self, pictures=pictures)
