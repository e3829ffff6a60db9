"""A run in TensorBoard's HParams tab, written with the hparams plugin's own protocol buffers
(``tensorboard.plugins.hparams.summary_v2``), and the custom-scalars layout of the per-class
curves.

HParams has one row per run (the trial id is the run's folder, so runs of different sweeps never
merge into one averaged row). Every run declares every setting (``declared_hparams``) and no
run writes an experiment record, so TensorBoard computes the table from all runs of the logdir:
the union of their keys, those whose values differ between runs first (a sweep's keys, a
separate run's seed). Its metric columns are the runs' own curves, at their last value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tensorboard.plugins.hparams import summary_v2 as hp
from torch.utils.tensorboard import SummaryWriter

from common.nested import flatten
from trainer import results
from trainer.loggers.base import RunInfo

HParamValue = bool | int | float | str
PER_CHART = 5  # classes to a custom-scalars chart
# flattened config keys that say how a launch started or record the data, not what was chosen
NOT_SETTINGS = ("resume", "overwrite", "resume_accept_changes", "split.")


def as_hparam(value: Any) -> HParamValue:
    return value if isinstance(value, bool | int | float | str) else str(value)


def declared_hparams(
    config: Mapping[str, Any], choices: Mapping[str, str] | None = None
) -> dict[str, HParamValue]:
    """Every setting of the run: each config group's option as typed (``loss``: ``ldam``; without
    Hydra's record, the loss's class), then every key of the resolved config but the classes the
    options name (``_target_``) and the launch's own keys. Every run declares the same keys, so
    TensorBoard's HParams tab, which takes their union over the logdir, shows each difference."""
    choices = dict(choices or {})
    choices.setdefault("loss", str(pick(config, "loss._target_") or "").rsplit(".", 1)[-1])
    declared = {group: as_hparam(option) for group, option in sorted(choices.items()) if option}
    for key, value in flatten(config).items():
        if key.rsplit(".", 1)[-1] in ("_target_", "_partial_") or key.startswith(NOT_SETTINGS):
            continue
        declared.setdefault(key, as_hparam(value))
    return declared


def pick(config: Mapping[str, Any], dotted: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``; None where a key is missing."""
    value: Any = config
    for key in dotted.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def trial_id(run_dir: Path) -> str:
    """A name of the run no other run has, its own folder's name first (the table cuts it short):
    ``0_loss-ce (outputs/multirun/2026-12-02/10-00-00)``, relative to the working folder if inside."""
    folder = run_dir.absolute()
    try:
        parent = str(folder.parent.relative_to(Path.cwd()))
    except ValueError:
        parent = str(folder.parent)
    return f"{folder.name} ({parent})"


def write_hparams(writer: SummaryWriter, run: RunInfo) -> None:
    """The run's settings as one HParams session. No experiment record is written: TensorBoard
    then builds the table from every run's session in the logdir, the union of their keys, and
    lists the keys whose values differ between runs first (one run's record would hide the keys
    other runs vary); its metric columns are the runs' scalars."""
    session = hp.hparams_pb(declared_hparams(run.config, run.choices), trial_id=trial_id(run.run_dir))
    writer._get_file_writer().add_summary(session)  # torch's writer takes raw summaries only so
    writer.flush()


def add_layout(
    writer: SummaryWriter, prefixes: Sequence[str], class_names: Sequence[str], class_counts: Sequence[int]
) -> None:
    """The custom-scalars tab: per model, the classes by training images, most first, at most
    ``PER_CHART`` to a chart, each chart titled with its classes (the lines share one colour)."""
    counts = list(class_counts) or [0] * len(class_names)
    order = sorted(range(len(class_names)), key=lambda c: -counts[c])
    charts = {}
    for prefix in prefixes:
        for start in range(0, len(order), PER_CHART):
            chunk = order[start : start + PER_CHART]
            title = f"{prefix} recall: " + ", ".join(f"{class_names[c]} ({counts[c]})" for c in chunk)
            tags = [re.escape(f"{prefix}{results.PER_CLASS}/{class_names[c]}") + "$" for c in chunk]
            charts[title] = ["Multiline", ["^(" + "|".join(tags) + ")"]]
    writer.add_custom_scalars({"per class (training images)": charts})
