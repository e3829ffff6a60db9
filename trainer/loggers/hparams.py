"""A run in TensorBoard's HParams tab, written with the hparams plugin's own protocol buffers
(``tensorboard.plugins.hparams.summary_v2``), and the custom-scalars layout of the per-class
curves.

HParams lists what a user chose, one row per run (the trial id is the run's folder, so runs of
different sweeps never merge into one averaged row): the keys a sweep varies first (flagged, so
TensorBoard shows them first), then loss (as its group option), model and lr, then the other
command-line overrides, at most four in all unless more keys are swept: TensorBoard shows five
setting columns before the metrics, so four leave the best value whole on a 1,400-pixel
screen. Its metrics are read by TensorBoard from curves the run already has: first the best
monitored value (the running best, ``best/<monitor>``), then the last epoch's numbers of each
model, those of TensorBoard's first section first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from torch.utils.tensorboard import SummaryWriter

from trainer import results
from trainer.loggers.base import RunInfo
from trainer.results import FitSummary

HParamValue = bool | int | float | str
PER_CHART = 5  # classes to a custom-scalars chart
# TensorBoard shows the first five settings as columns before the metrics; four leave the first
# metric (the best value) whole on a 1,400-pixel screen
COLUMNS = 4
# overrides of a key of the fixed list show under its short name
SHORT_NAMES = {"optimizer.lr": "lr", "model.name": "model", "dataset.batch_size": "batch_size"}


def pick(config: Mapping[str, Any], dotted: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``; None where a key is missing."""
    value: Any = config
    for key in dotted.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def as_hparam(value: Any) -> HParamValue:
    return value if isinstance(value, bool | int | float | str) else str(value)


def chosen_hparams(
    config: Mapping[str, Any],
    overrides: Sequence[str],
    varied: Sequence[str] = (),
    choices: Mapping[str, str] | None = None,
) -> dict[str, HParamValue]:
    """The swept keys, then loss, model and lr, then the other command-line overrides by their keys
    (a group as its chosen option, a value as resolved in the run's config); at most ``COLUMNS``
    unless more keys are swept (every setting is in ``.hydra/`` and train.log)."""
    choices = choices or {}
    loss = choices.get("loss") or str(pick(config, "loss._target_") or "").rsplit(".", 1)[-1]
    fixed: dict[str, Any] = {
        "loss": loss,
        "model": pick(config, "model.name"),
        "lr": pick(config, "optimizer.lr"),
    }
    given: dict[str, Any] = {}
    for override in overrides:
        key, _, value_given = override.lstrip("+~").partition("=")
        value, name = pick(config, key), SHORT_NAMES.get(key, key)
        if key in choices:  # a config group: the option as typed
            given[name] = choices[key]
        elif name in fixed:
            given[name] = fixed[name]
        else:
            given[name] = value_given if value is None or isinstance(value, Mapping) else value
    swept = [SHORT_NAMES.get(k, k) for k in varied]
    chosen = {k: given.get(k, fixed.get(k)) for k in swept}
    chosen |= {k: v for k, v in {**fixed, **given}.items() if k not in chosen}
    kept = [(k, v) for k, v in chosen.items() if v is not None][: max(COLUMNS, len(swept))]
    return {key: as_hparam(value) for key, value in kept}


def trial_id(run_dir: Path) -> str:
    """A name of the run no other run has, its own folder's name first (the table cuts it short):
    ``0_loss-ce (outputs/multirun/2026-12-02/10-00-00)``, relative to the working folder if inside."""
    folder = run_dir.absolute()
    try:
        parent = str(folder.parent.relative_to(Path.cwd()))
    except ValueError:
        parent = str(folder.parent)
    return f"{folder.name} ({parent})"


def hparam_metrics(summary: FitSummary) -> list[api_pb2.MetricInfo]:
    """The best monitored value, then the last epoch's numbers of each model, headline first."""
    best = results.board_tag(results.best_tag(summary.monitor))
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=best), display_name=f"best {summary.monitor}")]
    headline_first = sorted(results.VALIDATION, key=lambda n: n not in results.HEADLINE)
    for prefix in summary.final or {}:
        for name in headline_first:  # the last epoch's, per model
            tag = results.tag(prefix, name)
            metrics.append(
                api_pb2.MetricInfo(
                    name=api_pb2.MetricName(tag=results.board_tag(tag)), display_name=f"{tag} (last epoch)"
                )
            )
    return metrics


def experiment_pb(
    infos: Sequence[api_pb2.HParamInfo], metrics: Sequence[api_pb2.MetricInfo]
) -> summary_pb2.Summary:
    """The experiment record, built as the plugin's own ``hparams_config_pb`` builds it, with
    each setting's ``differs`` flag, which that function cannot set."""
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics)
    summary = summary_pb2.Summary()
    content = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(experiment=experiment))
    summary.value.add(tag=metadata.EXPERIMENT_TAG, metadata=content, tensor=metadata.NULL_TENSOR)
    return summary


def hparam_info(name: str, value: HParamValue, varied: bool) -> api_pb2.HParamInfo:
    kind = api_pb2.DATA_TYPE_STRING
    if isinstance(value, bool):
        kind = api_pb2.DATA_TYPE_BOOL
    elif isinstance(value, int | float):
        kind = api_pb2.DATA_TYPE_FLOAT64
    return api_pb2.HParamInfo(name=name, type=kind, differs=varied)


def write_hparams(writer: SummaryWriter, run: RunInfo, summary: FitSummary) -> None:
    """The run's chosen settings and its headline metrics in the HParams tab. TensorBoard shows
    the settings marked as varying first: the keys a sweep varies, or else the overrides given."""
    hparams = chosen_hparams(run.config, run.overrides, run.varied, run.choices)
    keys = run.varied or [o.lstrip("+~").partition("=")[0] for o in run.overrides]
    varied = {SHORT_NAMES.get(k, k) for k in keys}
    infos = [hparam_info(name, value, name in varied) for name, value in hparams.items()]
    file_writer = writer._get_file_writer()  # torch's writer takes raw summaries only through it
    file_writer.add_summary(experiment_pb(infos, hparam_metrics(summary)), summary.epoch)
    file_writer.add_summary(hp.hparams_pb(hparams, trial_id=trial_id(run.run_dir)), summary.epoch)
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
