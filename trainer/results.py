"""Every number a run reports, named once.

Tags (``val/balanced_acc``; TensorBoard places them with ``board_tag``), metrics.csv columns
(``val_balanced_acc``), the HParams metrics, the end-of-run table, the values
``trainer.monitor`` (and with it early stopping and best.pt) may choose: all are made here from
the names below, read when they are needed, so a metric added to ``VALIDATION`` (and computed by
``Evaluation``) appears everywhere at once.
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
