"""Train an image classifier from the Hydra config in configs/: compose, validate, build, fit.

    python train.py loss=ldam model=convnextv2 optimizer.lr=1e-4 trainer.epochs=30
    python train.py -m loss=ce,focal optimizer.lr=1e-3,1e-4

Returns the best value of ``trainer.monitor``, the number a sweep optimises. The settings are
checked before torch, timm and TensorBoard are imported (``validate``), so a mistake costs the
time it takes to compose the config; the heavy libraries load in ``train`` once they pass.
"""

from __future__ import annotations

import common.startup_signals  # noqa: F401  # isort: skip  (first: a Ctrl-C while libraries load)
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from common.errors import UserError
from common.files import check_file
from data.mixup import check_mixup_group
from data.settings import DataSettings
from models.settings import check_model_group
from trainer.interrupt import StopSignals
from trainer.shell import cluster
from trainer.shell.launch import (
    exit_now,
    exits_cleanly,
    log_config,
    prepare_argv,
    prepare_log_handlers,
    stopper,
    warn_unfindable_resume,
)
from trainer.shell.registry import register_configs
from trainer.shell.rundir import KEPT_BY_HYDRA, check_run_dir
from trainer.shell.sweep import apply_search, check_direction

if TYPE_CHECKING:
    from trainer.progress import FitSummary

log = logging.getLogger("train")


def validate(cfg: DictConfig) -> None:
    """Refuse what the settings alone show to be wrong: no file is read, no heavy library loaded."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError as err:
        reason = str(err).splitlines()[0]
        raise UserError(f"{err.full_key}: {reason}. Set the variable, or give the value itself.") from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise UserError(f"Required setting(s) not given: {', '.join(missing)}. Add e.g. {missing[0]}=VALUE.")
    if not isinstance(cfg.seed, int) or not 0 <= cfg.seed < 2**32:
        raise UserError(f"seed={cfg.seed!r} must be an integer from 0 to 2**32 - 1 = {2**32 - 1}.")
    if not isinstance(cfg.optimizer.lr, float | int) or not 0 < cfg.optimizer.lr < float("inf"):
        raise UserError(f"optimizer.lr={cfg.optimizer.lr} must be a positive number, e.g. optimizer.lr=1e-4.")
    OmegaConf.to_object(cfg.trainer)  # each dataclass checks its own values
    OmegaConf.to_object(cfg.dataset)
    if cfg.mixup:
        check_mixup_group(cfg.mixup, cfg.dataset.batch_size)
    if cfg.resume not in (None, "auto"):
        check_file(cfg.resume, "resume", "a checkpoint path (e.g. RUN/checkpoints/last.pt)")
    check_model_group(cfg.model)


def group_choices() -> dict[str, str]:
    """The option chosen in each config group (``loss`` -> ``ldam``), as the user types them."""
    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {k: str(v) for k, v in choices.items() if v is not None and not k.startswith("hydra/")}


def run_config(cfg: DictConfig, dataset: DataSettings) -> dict[str, Any]:
    """The config as plain data for the checkpoint, with the dataset settings' class for the scripts;
    ``dataset.root`` absolute, so that a script run from another folder finds the data."""
    config = OmegaConf.to_container(cfg, resolve=True)
    if cfg.dataset.root is not None:
        config["dataset"]["root"] = str(Path(cfg.dataset.root).expanduser().absolute())
    config["dataset_class"] = f"{type(dataset).__module__}.{type(dataset).__qualname__}"
    return config


def train(
    cfg: DictConfig, run_dir: Path, stop: StopSignals | None = None, overrides: Sequence[str] = ()
) -> FitSummary:
    """Build everything ``cfg`` describes and train it; outputs go under ``run_dir``, which is
    locked against a second process meanwhile. Returns the best and the last epoch's metrics."""
    apply_search(cfg)
    validate(cfg)
    # torch, timm and TensorBoard load only for settings that passed
    from reporting.page import report_or_warn
    from trainer.build import build_loggers, build_parts, check_libraries, model_head, optimizer_node
    from trainer.checkpoint import check_compatible, resolve_resume
    from trainer.evaluation.held_out import test_best
    from trainer.evaluation.reports import log_summary, write_metrics
    from trainer.loggers.base import RunInfo
    from trainer.seed import seed_everything
    from trainer.shell.continuity import check_same_experiment
    from trainer.shell.session import session, set_threads
    from trainer.shell.sweep import sweep_context
    from trainer.trainer import Trainer

    dataset: DataSettings = OmegaConf.to_object(cfg.dataset)
    check_libraries(cfg.optimizer, cfg.scheduler, cfg.model, dataset, cfg.trainer.epochs, cfg.trainer.device)
    loggers = build_loggers(cfg.get("logger"))  # a bad logger setting is refused before the data scan
    with session(run_dir, cfg.resume, stop) as here:
        log.info("Run directory %s; overrides: %s", here.run_dir, " ".join(overrides) or "none")
        log_config(OmegaConf.to_container(cfg, resolve=True))
        resume_state = resolve_resume(cfg.resume, here.run_dir)
        cfg.model.head = model_head(cfg.model.head, cfg.loss._target_)  # the checkpoint records the choice
        seed_everything(cfg.seed)
        parts = build_parts(dataset, cfg.model, cfg.loss, cfg.optimizer, cfg.scheduler, cfg.mixup)
        data = parts.data
        config = run_config(cfg, dataset)
        if data.split is not None:  # a carved split: recorded, so a resume on other images is refused
            config["split"] = data.split.record()
        if resume_state is not None:
            key = f"resume={cfg.resume}"
            check_compatible(resume_state, cfg.model, data.class_names, key=key)
            check_same_experiment(resume_state, config, data.class_counts, cfg.resume_accept_changes, key)
        if here.dist.is_main:  # classes.csv, and split.csv for a carved split
            data.write_records(here.run_dir)
        set_threads(cfg.trainer.num_threads, data.settings.num_workers)
        varied, sweep_dir = sweep_context()
        trainer = Trainer(
            config=OmegaConf.to_object(cfg.trainer),
            model=parts.model,
            criterion=parts.criterion,
            optimizer_factory=parts.optimizer_factory,
            scheduler_factory=parts.scheduler_factory,
            train_loader=parts.train_loader(cfg.seed, here.dist),
            val_loader=data.val_loader(here.dist),
            mixup_fn=parts.mixup_fn,
            class_names=data.class_names,
            class_counts=data.class_counts,
            run_dir=here.run_dir,
            seed=cfg.seed,
            loggers=loggers if here.dist.is_main else (),  # rank 0 alone writes
            run_info=RunInfo(
                here.run_dir,
                data.class_names,
                [],
                config,
                list(overrides),
                varied,
                sweep_dir,
                choices=group_choices(),
            ),
            run_config=config,
            dist=here.dist,
            stop=stop,
            freeze_epochs=cfg.model.get("freeze_backbone_epochs") or 0,
            sam=optimizer_node(cfg.optimizer)[1],
            max_norm=cfg.model.get("max_norm"),
            max_norm_relative=cfg.model.get("max_norm_relative", False),
        )
        summary = trainer.fit(resume_state)
        if data.test_dataset is not None:  # untouched until now: evaluated once, with best.pt
            summary = test_best(trainer, data.val_loader(here.dist, split="test"), summary)
    log_summary(summary, here.run_dir)
    if here.dist.is_main and summary.best_epoch is not None:
        write_metrics(summary, here.run_dir, data.listing.sources)
    if here.dist.is_main and cfg.trainer.report:
        report_or_warn(here.run_dir)
    return summary


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    prepare_log_handlers()
    cluster.adopt_job_environment()  # a submitit job of several tasks is one DDP run
    multirun = hydra_config.mode == RunMode.MULTIRUN
    # the overrides as typed: an unresolvable ${...} in one is reported by validate, not here
    typed = {k: OmegaConf.to_container(v, resolve=False) for k, v in hydra_config.overrides.items()}
    warn_unfindable_resume(cfg.resume, typed["hydra"], multirun)
    cfg.resume = cluster.resume_setting(cfg.resume, run_dir)  # a requeued job continues
    preemption = cluster.preemption_signal()
    overrides = typed["task"]
    stop = StopSignals(on_stop_now=stopper(run_dir, overrides)).install(
        extra=[preemption] if preemption else []
    )
    with exits_cleanly(run_dir, overrides, stop):
        check_direction(cfg.trainer.monitor, cfg.trainer.monitor_mode)
        if multirun:  # a single run's directory was checked before Hydra wrote into it
            check_run_dir(run_dir, cfg.resume, cfg.overwrite, keep=KEPT_BY_HYDRA)
        best = train(cfg, run_dir, stop, overrides).best_metric
    cluster.finished(run_dir)
    return None if best is None else float(f"{best:.6g}")  # as metrics.csv has it: no float32 noise


if __name__ == "__main__":
    register_configs()
    sys.argv = prepare_argv(sys.argv)
    main()
    exit_now()  # all written and closed: skip the second of interpreter teardown
