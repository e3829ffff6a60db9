"""Train an image classifier from the Hydra config in configs/: compose, validate, build, fit.

    python train.py loss=ldam model=convnextv2 optimizer.lr=1e-4 trainer.epochs=30
    python train.py -m loss=ce,focal optimizer.lr=1e-3,1e-4

Returns the best value of ``trainer.monitor``, the number a sweep optimises.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from common.dist import Dist, launched_by_torchrun
from common.errors import UserError
from data import DigitsData, ImageFolderData, RafDBData
from data.folders import check_even_batch
from data.mixup import check_mixup
from models.factory import check_model
from trainer.checkpoint import check_checkpoint_path, check_compatible, resolve_resume, resume_run_dir
from trainer.config import TrainerConfig
from trainer.distributed import broadcast, cpu_threads, init_distributed, shutdown_distributed
from trainer.interrupt import Interrupted, StopSignals
from trainer.launch import escape_undecodable_logs, exits_cleanly, warn_unfindable_resume
from trainer.logging import hparam_metrics, log_hparams
from trainer.runlock import lock_run_dir
from trainer.seed import seed_everything
from trainer.trainer import MixupFn, OptimizerFactory, SchedulerFactory, Trainer, check_device

log = logging.getLogger("train")


def register_configs() -> None:
    """Type the dataset and trainer groups by their dataclasses, so Hydra rejects wrong keys and types."""
    cs = ConfigStore.instance()
    for name, node in (("imagefolder", ImageFolderData), ("digits", DigitsData), ("rafdb", RafDBData)):
        cs.store(group="schema/dataset", name=name, node=node)
    cs.store(group="schema/trainer", name="default", node=TrainerConfig)


register_configs()


def build(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``instantiate(node)``; a constructor's complaint about a config value becomes a UserError."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, ValueError | TypeError):
            raise UserError(f"{key}: {cause}") from err
        raise


def check_optimizer_and_scheduler(cfg: DictConfig) -> None:
    """Build the optimizer and schedule on a one-parameter probe: timm names a wrong setting now,
    not after the data scan (an unknown ``optimizer.opt`` or ``scheduler.sched``, a bad value)."""
    try:
        optimizer = build(cfg.optimizer, "optimizer")(nn.Linear(1, 1))
    except (ValueError, TypeError, KeyError) as err:
        raise UserError(
            f"optimizer (optimizer.opt={cfg.optimizer.get('opt')!r}): {str(err).rstrip('.')}. timm's names: "
            f'`python -c "import timm.optim; print(timm.optim.list_optimizers())"`.'
        ) from None
    if not cfg.scheduler or not cfg.trainer.epochs >= 1:  # trainer.epochs is named by TrainerConfig
        return
    try:
        build(cfg.scheduler, "scheduler")(optimizer, num_epochs=cfg.trainer.epochs, updates_per_epoch=1)
    except (ValueError, TypeError, KeyError) as err:
        raise UserError(
            f"scheduler (scheduler.sched={cfg.scheduler.get('sched')!r}): {str(err).rstrip('.')}. "
            f"timm knows cosine, tanh, step, multistep, plateau, poly, rsqrt and constant."
        ) from None


def validate(cfg: DictConfig) -> None:
    """Refuse settings that only the built objects would reject, before any data is read."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise UserError(f"Required setting(s) not given: {', '.join(missing)}. Add e.g. {missing[0]}=VALUE.")
    if not isinstance(cfg.seed, int):
        raise UserError(f"seed={cfg.seed!r} must be an integer.")
    if not isinstance(cfg.optimizer.lr, float | int) or not cfg.optimizer.lr > 0:
        raise UserError(f"optimizer.lr={cfg.optimizer.lr} must be positive, e.g. optimizer.lr=1e-4.")
    if cfg.mixup:
        m = cfg.mixup
        check_mixup(
            m.mixup_alpha, m.cutmix_alpha, m.cutmix_minmax, m.prob, m.switch_prob, m.mode, m.label_smoothing
        )
        check_even_batch(cfg.dataset.batch_size)
    check_model(cfg.model.name, cfg.model.get("head", "linear"), cfg.model.get("drop_path_rate", 0.0))
    if cfg.resume not in (None, "auto"):
        check_checkpoint_path(cfg.resume)
    weights = cfg.model.get("checkpoint_path")
    if weights and not Path(weights).is_file():
        raise UserError(f"model.checkpoint_path={weights!r} is not a file. Give a local weights file.")
    if cfg.model.get("freeze_backbone") and not (weights or cfg.model.get("pretrained")):
        raise UserError(
            "model.freeze_backbone=true trains the classifier alone on a frozen backbone, but no backbone "
            "weights are given, so it would stay random. Give them with model.checkpoint_path=FILE (for "
            "experiment=crt: the stage-1 run's checkpoints/best.pt) or model.pretrained=true."
        )
    check_optimizer_and_scheduler(cfg)
    check_device(cfg.trainer.device)
    if cfg.trainer.data_parallel and launched_by_torchrun():
        raise UserError(
            "trainer.data_parallel=true under torchrun: each process already drives one GPU. "
            "Drop trainer.data_parallel (or launch with plain python for DataParallel on one machine)."
        )


@dataclass
class Parts:
    """The objects a run is built from, each from its config group."""

    data: ImageFolderData
    model: nn.Module
    criterion: nn.Module
    optimizer_factory: OptimizerFactory
    scheduler_factory: SchedulerFactory | None
    mixup_fn: MixupFn | None


def build_parts(cfg: DictConfig) -> Parts:
    """Data first (the class names and counts feed the model, the loss and Mixup), then the rest."""
    data: ImageFolderData = OmegaConf.to_object(cfg.dataset)
    return Parts(
        data=data,
        model=build(cfg.model, "model", num_classes=data.num_classes),
        criterion=build(cfg.loss, "loss", cls_num_list=data.class_counts),
        optimizer_factory=build(cfg.optimizer, "optimizer"),
        scheduler_factory=build(cfg.scheduler, "scheduler") if cfg.scheduler else None,
        mixup_fn=build(cfg.mixup, "mixup", num_classes=data.num_classes) if cfg.mixup else None,
    )


def run_config(cfg: DictConfig, data: ImageFolderData) -> dict[str, Any]:
    """The config as plain data for the checkpoint, with the dataset's class for the scripts."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config["dataset_class"] = f"{type(data).__module__}.{type(data).__qualname__}"
    return config


def train(cfg: DictConfig, run_dir: Path, stop: StopSignals | None = None) -> dict[str, Any]:
    """Build everything ``cfg`` describes and train it; outputs go under ``run_dir``.

    Returns the Trainer's summary: best monitored metric and epoch, the last epoch's metrics.
    The run directory is locked against a second process for as long as this runs.
    """
    validate(cfg)
    trainer_config: TrainerConfig = OmegaConf.to_object(cfg.trainer)
    dist = init_distributed()
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # one log: rank 0's
    run_dir = broadcast(run_dir, dist)  # all ranks write where rank 0's Hydra put the run
    run_dir = resume_run_dir(cfg.resume, run_dir)
    lock = None
    try:
        lock = lock_run_dir(run_dir, dist)
        if stop is not None:
            stop.announce = dist.is_main
        return train_locked(cfg, trainer_config, run_dir, dist, stop)
    except Interrupted as err:
        err.run_dir = run_dir
        raise
    finally:
        if lock is not None:
            lock.release()
        shutdown_distributed(dist)


def train_locked(
    cfg: DictConfig, trainer_config: TrainerConfig, run_dir: Path, dist: Dist, stop: StopSignals | None
) -> dict[str, Any]:
    resume_state = resolve_resume(cfg.resume, run_dir)
    seed_everything(cfg.seed)
    parts = build_parts(cfg)
    data = parts.data
    if resume_state is not None:
        check_compatible(resume_state, cfg.model.name, data.class_names, key=f"resume={cfg.resume}")
    counts = ", ".join(f"{n} {c}" for n, c in zip(data.class_names, data.class_counts, strict=True))
    log.info("Data %s: training images per class: %s", data.root, counts)
    log.info("Model %s, loss %s", cfg.model.name, type(parts.criterion).__name__)
    torch.set_num_threads(cpu_threads(trainer_config.num_threads, data.num_workers))
    log.info(
        "CPU: %d torch thread(s), %d loader worker(s), %s cores",
        torch.get_num_threads(),
        data.num_workers,
        os.cpu_count(),
    )

    generator = torch.Generator().manual_seed(cfg.seed)
    train_loader = data.train_loader(generator, even_batches=parts.mixup_fn is not None, dist=dist)
    start_epoch = resume_state["epoch"] + 1 if resume_state else 1
    # purge_step drops the events of epochs a resumed run trains again; only rank 0 writes
    writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_epoch) if dist.is_main else None
    trainer = Trainer(
        config=trainer_config,
        model=parts.model,
        criterion=parts.criterion,
        optimizer_factory=parts.optimizer_factory,
        scheduler_factory=parts.scheduler_factory,
        train_loader=train_loader,
        val_loader=data.val_loader(dist),
        mixup_fn=parts.mixup_fn,
        class_names=data.class_names,
        class_counts=data.class_counts,
        run_dir=run_dir,
        seed=cfg.seed,
        writer=writer,
        run_config=run_config(cfg, data),
        dist=dist,
        stop=stop,
    )
    try:
        summary = trainer.fit(resume_state)
        if writer is not None:
            log_hparams(writer, trainer.run_config, hparam_metrics(summary))
    finally:
        if writer is not None:
            writer.close()
    log.info(
        "Best %s = %s at epoch %s; outputs in %s",
        summary["monitor"],
        summary["best_metric"],
        summary["best_epoch"],
        run_dir,
    )
    return summary


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    escape_undecodable_logs()
    warn_unfindable_resume(cfg.resume, list(hydra_config.overrides.hydra))
    stop = StopSignals().install()
    with exits_cleanly(run_dir, list(hydra_config.overrides.task)):
        return train(cfg, run_dir, stop)["best_metric"]


if __name__ == "__main__":
    if launched_by_torchrun():
        if {"-m", "--multirun"} & set(sys.argv):
            sys.exit("train.py: a multirun sweep cannot run under torchrun; launch one torchrun per setting.")
        if int(os.environ.get("RANK", "0")) > 0:  # rank 0's Hydra makes the run directory
            sys.argv += ["hydra.output_subdir=null", f"hydra.run.dir={tempfile.mkdtemp(prefix='rank')}"]
    main()
