"""Every number a run reports, named once.

TensorBoard tags (``val/balanced_acc``), metrics.csv columns (``val_balanced_acc``), the HParams
metrics, the end-of-run table, the values ``trainer.monitor`` (and with it early stopping and
best.pt) may choose: all are made here from the names below, read when they are needed, so a
metric added to ``VALIDATION`` (and computed by ``Evaluation``) appears everywhere at once.
No torch here: the settings check the monitor before any library loads.
"""

from __future__ import annotations

from dataclasses import dataclass

# Every validation of a model, per epoch: attributes of trainer.evaluation.metrics.Evaluation.
VALIDATION = ("loss", "acc", "balanced_acc", "macro_f1", "ece")
POSTHOC = "balanced_acc_adjusted"  # with trainer.posthoc_tau set
SHOT_GROUPS = ("many", "medium", "few")
# Computed when their inputs are known (the post-hoc tau, the training counts); else left out.
OPTIONAL = (POSTHOC, *(f"acc_{group}" for group in SHOT_GROUPS))
# The training epoch's numbers (TrainStats), as train/<name>.
TRAINING = ("loss", "lr", "images_per_s")
MODELS = ("val", "val_ema")  # the raw model, and its EMA when there is one
PER_CLASS = "_per_class"  # val_per_class/<class>: a section of its own
# Up to this many classes, every class is shown everywhere (per-class curves, the confusion
# picture, the end table); above it, what a reader can take in (the top confused pairs, the
# worst and best classes), so that reporting costs the same for 1,000 classes as for 10.
# Every class's numbers are in RUN/per_class.csv whatever the count.
DETAIL_CLASSES = 30


def validation_names() -> tuple[str, ...]:
    """Every per-model number: ``VALIDATION`` then ``OPTIONAL`` (as they stand when called)."""
    return (*VALIDATION, *OPTIONAL)


def tag(model: str, name: str) -> str:
    """The TensorBoard tag (and trainer.monitor value) of ``name`` for ``model``: ``val/acc``."""
    return f"{model}/{name}"


def column(tagged: str) -> str:
    """The metrics.csv column of a tag: ``val/acc`` -> ``val_acc``."""
    return tagged.replace("/", "_")


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
