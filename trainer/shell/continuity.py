"""A resumed run continues the experiment it started, or says what would change.

``resume=...`` with another loss, optimizer, model setting or augmentation, or on training data
whose class counts changed (images added or removed since the checkpoint: they set LDAM's margins,
the class weights and the sampler), would silently train a different experiment under the old
run's name. Such a resume is refused, naming every setting and class that differs, unless the
launch accepts it with ``resume_accept_changes=true`` (then the log lists the changes and the
checkpoint records the new settings). Settings that only say how or where the run computes or
reports (device, precision, threads, workers, logging, the data's location) and those whose
change is already handled (the schedule's length and shape, the batch size, early stopping, the
monitored metric) may change freely.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from common.errors import UserError
from common.nested import flatten

log = logging.getLogger("train")

ACCEPT_KEY = "resume_accept_changes"
# dotted keys (and their sub-keys) that a resume may change without becoming another experiment
FREE = (
    "resume",
    "overwrite",
    ACCEPT_KEY,
    "hparams_search",
    "logger",  # where and how the run is recorded
    "dataset.root",
    "dataset.num_workers",
    "dataset.pin_memory",
    "dataset.val_batch_size",
    "dataset.cache_images",
    "dataset.persistent_workers",
    "dataset.on_bad_image",
    "dataset.max_image_pixels",
    "dataset.batch_size",  # the schedule follows it (trainer.checkpoint.schedule_changes)
    "model.pretrained",  # initial weights: the checkpoint's replace them
    "model.checkpoint_path",
    "scheduler",
    "trainer.epochs",
    "trainer.device",
    "trainer.amp",
    "trainer.amp_dtype",
    "trainer.data_parallel",
    "trainer.channels_last",
    "trainer.num_threads",
    "trainer.sync_bn",
    "trainer.compile",
    "trainer.monitor",
    "trainer.monitor_mode",
    "trainer.early_stopping",
    "trainer.log_every_steps",
    "trainer.checkpoint_every_steps",
    "trainer.progress",
    "trainer.many_shot",
    "trainer.few_shot",
    "trainer.posthoc_tau",
    "trainer.gallery_every",
    "trainer.report",
)


class Unset:
    def __repr__(self) -> str:
        return "(unset)"


MISSING = Unset()


def is_free(key: str) -> bool:
    return any(key == free or key.startswith(f"{free}.") for free in FREE)


def setting_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``key old -> new`` for each setting that makes ``current`` another experiment than ``saved``.

    A key that only one side has counts when its group changed otherwise too (another loss brings
    its own keys); alone, it is a setting the checkpoint's version did not know, and is passed over.
    """
    before, after = flatten(saved), flatten(current)
    changed = {k for k in before.keys() & after.keys() if before[k] != after[k] and not is_free(k)}
    groups = {k.split(".")[0] for k in changed}
    changed |= {k for k in before.keys() ^ after.keys() if k.split(".")[0] in groups and not is_free(k)}
    return [f"{k} {before.get(k, MISSING)!r} -> {after.get(k, MISSING)!r}" for k in sorted(changed)]


def count_changes(names: Sequence[str], saved: Sequence[int] | None, current: Sequence[int]) -> list[str]:
    """``class old -> new`` for each class whose training image count differs from the checkpoint's."""
    if saved is None:
        return []
    return [f"{n} {a} -> {b}" for n, a, b in zip(names, saved, current, strict=True) if a != b]


def check_same_experiment(
    state: Mapping[str, Any],
    config: Mapping[str, Any],
    class_counts: Sequence[int],
    accept: bool,
    key: str,
) -> None:
    """Refuse to resume ``state`` as a run of other settings or other data unless ``accept``."""
    settings = setting_changes(state["config"], config)
    counts = count_changes(state["class_names"], state.get("class_counts"), class_counts)
    if not settings and not counts:
        return
    what = []
    if settings:
        carved = any(change.startswith("split.") for change in settings)
        note = " (split.*: the images carved for validation differ; the run's split.csv lists its own)"
        what.append(f"settings: {'; '.join(settings)}{note if carved else ''}")
    if counts:
        what.append(
            f"training images per class, checkpoint -> now (the counts set LDAM's margins, the class "
            f"weights and the sampler): {', '.join(counts)}"
        )
    said = " and ".join(what)
    if accept:
        log.warning("%s=true: the resumed run continues with changed %s", ACCEPT_KEY, said)
        return
    raise UserError(
        f"{key} continues a run, but this launch differs from it in {said}. A resumed run trains "
        f"as it started. To continue with these changes anyway (the checkpoint then records them), "
        f"add {ACCEPT_KEY}=true; to train them as a new run, give another hydra.run.dir (or drop resume)."
    )
