"""A run in TensorBoard's HParams tab, written with the hparams plugin's own protocol buffers
(``tensorboard.plugins.hparams.summary_v2``), and the custom-scalars layout of the per-class
curves.

HParams lists what a user chose: each command-line override (``loss=ldam``,
``optimizer.lr=1e-4``: what a ``-m`` sweep varies) and a short fixed list (model, loss, lr,
batch size, epochs, image size, seed), not the 70-odd keys of the whole config. Its metrics are
read by TensorBoard from curves the run already has: the last epoch's ``val/...`` values, and
the best monitored value, which is written once into the sub-run ``best`` at the best epoch
(a single point on the monitored curve's chart), so no one-point ``hparam/*`` charts appear.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tensorboard.plugins.hparams import summary_v2 as hp
from torch.utils.tensorboard import SummaryWriter

from trainer.state import FitSummary

HParamValue = bool | int | float | str
FINAL = ("acc", "balanced_acc", "macro_f1", "ece", "loss")  # the last epoch's, per model (val, val_ema)
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


def hparam_metrics(summary: FitSummary) -> list[hp.Metric]:
    prefixes = list(summary.final or {})
    metrics = [hp.Metric(summary.monitor, group=BEST_RUN, display_name=f"best {summary.monitor}")]
    for prefix in prefixes:
        for name in FINAL:
            tag = f"{prefix}/{name}"
            metrics.append(hp.Metric(tag, display_name=f"{tag} (last epoch)"))
    return metrics


def write_hparams(
    writer: SummaryWriter, config: Mapping[str, Any], overrides: Sequence[str], summary: FitSummary
) -> None:
    """The run's chosen settings and its headline metrics in the HParams tab."""
    if summary.best_metric is not None and summary.best_epoch is not None:
        best = SummaryWriter(f"{writer.log_dir}/{BEST_RUN}")
        best.add_scalar(summary.monitor, summary.best_metric, summary.best_epoch)
        best.close()
    hparams = chosen_hparams(config, overrides)
    declared = [hp.HParam(name) for name in hparams]
    file_writer = writer._get_file_writer()
    file_writer.add_summary(hp.hparams_config_pb(declared, hparam_metrics(summary)), summary.epoch)
    file_writer.add_summary(hp.hparams_pb(hparams, trial_id=str(writer.log_dir)), summary.epoch)
    writer.flush()


def add_layout(writer: SummaryWriter, prefixes: Sequence[str]) -> None:
    """The custom-scalars tab: one chart per model with a line per class."""
    charts = {f"{p} accuracy per class": ["Multiline", [f"^{p}_per_class/"]] for p in prefixes}
    writer.add_custom_scalars({"per class": charts})
