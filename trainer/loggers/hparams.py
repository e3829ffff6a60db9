"""A run in TensorBoard's HParams tab, written with the hparams plugin's own protocol buffers
(``tensorboard.plugins.hparams.summary_v2``), and the custom-scalars layout of the per-class
curves.

HParams lists what a user chose: each command-line override (``loss=ldam``,
``optimizer.lr=1e-4``: what a ``-m`` sweep varies, marked so, which TensorBoard shows first)
and a short fixed list (model, loss, lr, batch size, epochs, image size, seed), not the
70-odd keys of the whole config. Its metrics are
read by TensorBoard from curves the run already has: the last epoch's ``val/...`` values, and
the best monitored value, which is written once into the sub-run ``best`` at the best epoch
(a single point on the monitored curve's chart), so no one-point ``hparam/*`` charts appear.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from torch.utils.tensorboard import SummaryWriter

from trainer import results
from trainer.progress import FitSummary

HParamValue = bool | int | float | str
BEST_RUN = "best"  # the sub-run holding the best monitored value


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


def chosen_hparams(config: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, HParamValue]:
    """The fixed list, then every command-line override by its key (a group choice as chosen,
    a value as resolved in the run's config)."""
    loss = str(pick(config, "loss._target_") or "").rsplit(".", 1)[-1]
    chosen: dict[str, Any] = {
        "model": pick(config, "model.name"),
        "loss": loss,
        "lr": pick(config, "optimizer.lr"),
        "batch_size": pick(config, "dataset.batch_size"),
        "epochs": pick(config, "trainer.epochs"),
        "image_size": pick(config, "dataset.image_size"),
        "seed": pick(config, "seed"),
    }
    for override in overrides:
        key, _, given = override.lstrip("+~").partition("=")
        value = pick(config, key)
        chosen[key] = given if value is None or isinstance(value, Mapping) else value
    return {key: as_hparam(value) for key, value in chosen.items() if value is not None}


def hparam_metrics(summary: FitSummary) -> list[api_pb2.MetricInfo]:
    """The best monitored value (from the sub-run ``best``), then the last epoch's headline numbers."""
    best = api_pb2.MetricName(group=BEST_RUN, tag=summary.monitor)
    metrics = [api_pb2.MetricInfo(name=best, display_name=f"best {summary.monitor}")]
    for prefix in summary.final or {}:
        for name in results.VALIDATION:  # the last epoch's, per model
            tag = results.tag(prefix, name)
            metrics.append(
                api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=f"{tag} (last epoch)")
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


def write_hparams(
    writer: SummaryWriter,
    config: Mapping[str, Any],
    overrides: Sequence[str],
    varied: Sequence[str],
    summary: FitSummary,
) -> None:
    """The run's chosen settings and its headline metrics in the HParams tab. TensorBoard shows
    the settings marked as varying first: ``varied``, the keys a sweep varies, or else the
    overrides given."""
    if summary.best_metric is not None and summary.best_epoch is not None:
        best = SummaryWriter(f"{writer.log_dir}/{BEST_RUN}")
        best.add_scalar(summary.monitor, summary.best_metric, summary.best_epoch)
        best.close()
    hparams = chosen_hparams(config, overrides)
    varied = set(varied) or {o.lstrip("+~").partition("=")[0] for o in overrides}
    infos = [hparam_info(name, value, name in varied) for name, value in hparams.items()]
    file_writer = writer._get_file_writer()  # torch's writer takes raw summaries only through it
    file_writer.add_summary(experiment_pb(infos, hparam_metrics(summary)), summary.epoch)
    file_writer.add_summary(hp.hparams_pb(hparams, trial_id=Path(writer.log_dir).parent.name), summary.epoch)
    writer.flush()


def add_layout(writer: SummaryWriter, prefixes: Sequence[str]) -> None:
    """The custom-scalars tab: one chart per model with a line per class."""
    charts = {f"{p} accuracy per class": ["Multiline", [f"^{p}_per_class/"]] for p in prefixes}
    writer.add_custom_scalars({"per class": charts})
