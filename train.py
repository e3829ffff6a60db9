"""Train an image classifier from the Hydra config in configs/: compose, validate, build, fit.

    python train.py loss=ldam model=convnextv2 optimizer.lr=1e-4 trainer.epochs=30
    python train.py -m loss=ce,focal optimizer.lr=1e-3,1e-4

Returns the best value of ``trainer.monitor``, the number a sweep optimises. The settings are
checked before torch, timm and TensorBoard are imported (``validate``), so a mistake costs the
time it takes to compose the config; the heavy libraries load in ``train`` once they pass.
"""

from __future__ import annotations

import common.startup_signals  # noqa: F401  # isort: skip  (first: a Ctrl-C while libraries load)
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from common.overrides import as_typed
from common.run_folder import RunFolder
from common.signals import StopSignals
from data.settings import DataSettings
from trainer.shell import cluster
from trainer.shell.launch import (
    drop_scratch_dir,
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
from trainer.shell.settings import group_choices, run_config, validate
from trainer.shell.sweep import apply_search, check_direction

if TYPE_CHECKING:
    from trainer.config import TrainerConfig
    from trainer.results import FitSummary

log = logging.getLogger("train")


def train(
    cfg: DictConfig, run_dir: Path, stop: StopSignals | None = None, overrides: Sequence[str] = ()
) -> FitSummary:
    """Build everything ``cfg`` describes and train it; outputs go under ``run_dir``, which is
    locked against a second process meanwhile. Returns the best and the last epoch's metrics."""
    apply_search(cfg)
    validate(cfg)
    # torch, timm and TensorBoard load only for settings that passed
    from reporting.write import report_or_warn
    from trainer.build import build_loggers, build_parts, check_libraries, model_head, optimizer_node
    from trainer.checkpoint import check_compatible, resolve_resume
    from trainer.evaluation.held_out import test_best
    from trainer.evaluation.reports import log_summary, write_metrics
    from trainer.loggers.base import RunInfo, attach_files
    from trainer.parts import RunContext
    from trainer.seed import seed_everything
    from trainer.shell.continuity import check_same_experiment
    from trainer.shell.session import session, set_threads
    from trainer.shell.sweep import sweep_context
    from trainer.trainer import Trainer

    dataset: DataSettings = OmegaConf.to_object(cfg.dataset)
    check_libraries(cfg.optimizer, cfg.scheduler, cfg.model, dataset, cfg.trainer.epochs, cfg.trainer.device)
    varied, sweep_dir = sweep_context()
    loggers = build_loggers(cfg.get("logger"), sweep_dir)  # a bad setting is refused before the data scan
    overrides = [as_typed(o) for o in overrides]  # a sweep job's, without the sweeper's escapes
    with session(run_dir, cfg.resume, stop) as here:
        log.info("Run directory %s; overrides: %s", here.run_dir, " ".join(overrides) or "none")
        log_config(OmegaConf.to_container(cfg, resolve=True))
        resume_state = resolve_resume(cfg.resume, here.run_dir)
        cfg.model.head = model_head(cfg.model.head, cfg.loss._target_)  # the checkpoint records the choice
        seed_everything(cfg.seed)
        tau = cfg.trainer.posthoc_tau
        parts = build_parts(dataset, cfg.model, cfg.loss, cfg.optimizer, cfg.scheduler, cfg.mixup, tau)
        data, config, folder = parts.data, run_config(cfg, dataset), RunFolder(here.run_dir)
        if data.split is not None:  # a carved split: recorded, so a resume on other images is refused
            config["split"] = data.split.record()
        if resume_state is not None:
            key = f"resume={cfg.resume}"
            check_compatible(resume_state, cfg.model, data.class_names, key=key)
            check_same_experiment(resume_state, config, data.class_counts, cfg.resume_accept_changes, key)
        if here.dist.is_main:  # classes.csv, and split.csv for a carved split
            data.write_records(here.run_dir)
        set_threads(cfg.trainer.num_threads, data.settings.num_workers)
        info = RunInfo(here.run_dir, data.class_names, [], config, list(overrides), varied, sweep_dir)
        run = RunContext(
            folder, cfg.seed, here.dist, stop, loggers if here.dist.is_main else (), info, config
        )
        run.info = dataclasses.replace(info, choices=group_choices())
        settings: TrainerConfig = OmegaConf.to_object(cfg.trainer)
        sam = optimizer_node(cfg.optimizer)[1]
        trainer = Trainer(settings, parts.training(settings, cfg.model, sam, cfg.seed, here.dist), run)
        summary = trainer.fit(resume_state)
        if data.test_dataset is not None:  # untouched until now: evaluated once, with best.pt
            test = data.val_loader(here.dist, split="test")
            summary = test_best(summary, lambda: trainer.evaluate_best(test))
    log_summary(summary, here.run_dir)
    if here.dist.is_main and summary.best_epoch is not None:
        write_metrics(summary, here.run_dir, data.listing.sources)
    if here.dist.is_main and cfg.trainer.report:
        report_or_warn(here.run_dir)
    ends = (folder.metrics_json, folder.per_class_csv, folder.report)
    attach_files(run.loggers, ends)  # MLflow keeps them beside the run's other artifacts
    return summary


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    prepare_log_handlers()
    drop_scratch_dir(run_dir)
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
