"""The objects of a run, built from their config groups with ``hydra.utils.instantiate``.

Each function takes the config node of one group (instantiate needs the node), never the whole
config. ``check_libraries`` asks timm and torch about the names they own (optimizer, schedule,
model, augmentation policy, device) on no data, so a wrong one is refused before the data scan.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from common.dist import Dist
from common.errors import UserError
from data.images import CheckedLoader
from data.listing import class_summary
from data.loaders import ImageData
from data.settings import DataSettings
from data.transforms import check_auto_augment
from models.factory import check_model, check_weights_file, probe_model, trained_classes
from models.settings import LDAM
from trainer.config import TrainerConfig
from trainer.device import check_device
from trainer.hooks.chosen import choose_hooks
from trainer.loggers.base import Logger
from trainer.parts import MixupFn, OptimizerFactory, SchedulerFactory, TrainingParts
from trainer.sam import SamSettings, SharpnessAware, tail_classes

log = logging.getLogger("train")


def instantiate_group(node: DictConfig, key: str, **kwargs: Any) -> Any:
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


def optimizer_node(optimizer: DictConfig) -> tuple[DictConfig, SamSettings]:
    """The optimizer's node for timm's factory (without ``sam``) and SAM's settings."""
    rho = OmegaConf.select(optimizer, "sam.rho", default=0.0) or 0.0
    if not isinstance(rho, float | int) or not 0 <= rho < float("inf"):
        raise UserError(
            f"optimizer.sam.rho={rho!r} must be a number >= 0: the radius of SAM's ascent (0 turns it "
            f"off; 0.05 is the paper's value with SGD)."
        )
    classes = OmegaConf.select(optimizer, "sam.classes", default="all") or "all"
    if classes not in ("all", "tail"):
        raise UserError(
            f"optimizer.sam.classes={classes!r} must be all (SAM) or tail (ImbSAM: the ascent for the "
            f"classes with fewer than trainer.few_shot training images only)."
        )
    node = optimizer.copy()
    with open_dict(node):
        node.pop("sam", None)
    return node, SamSettings(float(rho), classes == "tail")


def check_optimizer_and_scheduler(optimizer: DictConfig, scheduler: DictConfig | None, epochs: int) -> None:
    """Build the optimizer and schedule on a one-parameter probe: timm names a wrong setting now,
    not after the data scan (an unknown ``optimizer.opt`` or ``scheduler.sched``, a bad value)."""
    # timm's note that a one-layer model gets no layer-wise decay would be about the probe, not the model
    groups_log = logging.getLogger("timm.optim._param_groups")
    level = groups_log.level
    groups_log.setLevel(logging.ERROR)
    try:
        probe = instantiate_group(optimizer_node(optimizer)[0], "optimizer")(nn.Linear(1, 1))
    except (ValueError, TypeError, KeyError) as err:
        raise UserError(
            f"optimizer (optimizer.opt={optimizer.get('opt')!r}): {str(err).rstrip('.')}. timm's names: "
            f'`python -c "import timm.optim; print(timm.optim.list_optimizers())"`.'
        ) from None
    finally:
        groups_log.setLevel(level)
    if not scheduler:
        return
    try:
        instantiate_group(scheduler, "scheduler")(probe, num_epochs=epochs, updates_per_epoch=1)
    except (ValueError, TypeError, KeyError) as err:
        raise UserError(
            f"scheduler (scheduler.sched={scheduler.get('sched')!r}): {str(err).rstrip('.')}. "
            f"timm knows cosine, tanh, step, multistep, plateau, poly, rsqrt and constant."
        ) from None


def check_libraries(
    optimizer: DictConfig,
    scheduler: DictConfig | None,
    model: DictConfig,
    dataset: DataSettings,
    epochs: int,
    device: str,
) -> None:
    """The names timm and torch own, checked against their registries before any data is read."""
    check_model(model.name, model.get("head", "linear"), model.get("drop_path_rate", 0.0))
    if model.get("checkpoint_path"):
        check_weights_file(model.checkpoint_path)
    probe_model(OmegaConf.to_container(model, resolve=True), dataset.image_size, dataset.batch_size)
    check_optimizer_and_scheduler(optimizer, scheduler, epochs)
    check_auto_augment(dataset.auto_augment)
    check_device(device)


def model_head(head: str, loss_target: str) -> str:
    """``model.head=auto``: the cosine classifier for LDAM (its reference code uses one, because
    the scale s on raw linear logits can diverge), the linear one for every other loss."""
    if head != "auto":
        return head
    chosen = "cosine" if loss_target == LDAM else "linear"
    log.info("model.head=auto: %s for %s (set model.head=linear|cosine to choose)", chosen, loss_target)
    return chosen


def loss_scale(loss: DictConfig, model: DictConfig) -> dict[str, float]:
    """LDAM subtracts its margins in logit units: it is told the scale of the logits it gets
    (the cosine head's ``model.cosine_scale``; 1 for a linear head)."""
    if loss._target_ != LDAM:
        return {}
    return {"s": float(model.cosine_scale) if model.head == "cosine" else 1.0}


def within(source: str, root: str) -> str:
    """A split's source as the log shows it: relative to the data root when it lies inside."""
    prefix = root.rstrip("/") + "/"
    return source[len(prefix) :] if source.startswith(prefix) else source


def check_first_stage(model: DictConfig, class_names: list[str]) -> None:
    """A checkpoint of train.py as ``model.checkpoint_path`` names the classes its classifier
    rows answer for; a run that keeps those rows (a second stage: wb_stage2, mislas_stage2) or its
    features frozen (crt) must train on the same classes in the same order, compared by name.
    Only a whole fine-tune with a new classifier (``model.reinit_head=true``, backbone not frozen)
    may take another class set."""
    path = model.get("checkpoint_path")
    trained = trained_classes(str(path)) if path else None
    if trained is None or trained == class_names:
        return
    if model.get("reinit_head") and not model.get("freeze_backbone"):
        log.info(
            "model.checkpoint_path was trained on %d other classes; its classifier is replaced "
            "(model.reinit_head=true) and the whole model trains on these %d",
            len(trained),
            len(class_names),
        )
        return
    how = (
        f"the same {len(trained)} classes in another order ({trained} there, {class_names} here: "
        f"the folders sort otherwise), so each classifier row would answer for another class"
        if sorted(trained) == sorted(class_names)
        else f"{len(trained)} classes {trained}, but the data has {len(class_names)}: {class_names}"
    )
    raise UserError(
        f"model.checkpoint_path={str(path)!r} was trained on {how}. A second stage (a frozen "
        f"backbone, or the first stage's classifier kept) must train on its first stage's classes: "
        f"point dataset.root at that data with the same class folders, or start a new run "
        f"(model.reinit_head=true with model.freeze_backbone=false fine-tunes on other classes)."
    )


@dataclass
class RunParts:
    """The objects a run is built from, each from its config group."""

    data: ImageData
    model: nn.Module
    criterion: nn.Module
    optimizer_factory: OptimizerFactory
    scheduler_factory: SchedulerFactory | None
    mixup_fn: MixupFn | None

    def train_loader(self, seed: int, dist: Dist) -> CheckedLoader:
        """Training batches drawn from a generator seeded with ``seed`` (even batches for Mixup)."""
        generator = torch.Generator().manual_seed(seed)
        return self.data.train_loader(generator, even_batches=self.mixup_fn is not None, dist=dist)

    def training(
        self, trainer: TrainerConfig, model: DictConfig, sam: SamSettings, seed: int, dist: Dist
    ) -> TrainingParts:
        """What the Trainer is given: these parts, the loaders for this process, the hooks the
        settings ask for and SAM's gradients (``optimizer.sam``)."""
        data = self.data
        counts = data.class_counts
        tail = tail_classes(counts, trainer.few_shot) if sam.rho > 0 and sam.tail else None
        return TrainingParts(
            model=self.model,
            criterion=self.criterion,
            optimizer_factory=self.optimizer_factory,
            train_loader=self.train_loader(seed, dist),
            val_loader=data.val_loader(dist),
            class_names=data.class_names,
            class_counts=counts,
            scheduler_factory=self.scheduler_factory,
            mixup_fn=self.mixup_fn,
            hooks=choose_hooks(self.model, self.criterion, data, trainer, model, dist),
            sam=SharpnessAware(self.model, sam.rho, tail) if sam.rho > 0 else None,
        )


ADVISED_RATIO = 10  # from this imbalance on, a run that does nothing about it is told the recipe


def prior_corrections(dataset: DataSettings, loss: DictConfig) -> list[str]:
    """The settings of a run that already correct for the class prior: a re-balancing sampler
    (repeat-factor, balanced), the logit-adjusted loss, class weights, DRW."""
    target = str(loss.get("_target_", "")).rsplit(".", 1)[-1]
    found = [f"dataset.sampler={dataset.sampler}"] if dataset.sampler is not None else []
    found += [target] if target == "LogitAdjustedLoss" else []
    return found + [
        f"loss.{key}" for key in ("class_weights", "weight", "drw_epoch") if loss.get(key) is not None
    ]


def imbalance_advice(dataset: DataSettings, loss: DictConfig, counts: Sequence[int]) -> str | None:
    """One line for a run whose training classes are imbalanced (the largest at least
    ``ADVISED_RATIO`` times the smallest) and whose settings do nothing about it (shuffled batches,
    plain unweighted cross-entropy): the measured recipe and how to ask for it. None otherwise."""
    present = [n for n in counts if n > 0]
    if len(present) < 2 or max(present) < ADVISED_RATIO * min(present):
        return None
    target = str(loss.get("_target_", "")).rsplit(".", 1)[-1]
    if target != "CrossEntropyLoss" or loss.get("label_aware_smoothing") or prior_corrections(dataset, loss):
        return None
    return (
        f"The training classes are imbalanced (the largest has {max(present) / min(present):.0f} times "
        "the images of the smallest) and this run does nothing about it. The measured recipe: "
        "cross-entropy with repeat-factor sampling, dataset.sampler=repeat_factor (it led on every "
        "long-tailed set measured; README, What to use)."
    )


def double_correction(dataset: DataSettings, loss: DictConfig, posthoc_tau: float | None) -> str | None:
    """What to say when the shown post-hoc adjustment (``adj``, ``trainer.posthoc_tau``) would
    correct for the class prior a second time: the run's sampler or loss already does (repeat-factor
    or balanced sampling, the logit-adjusted loss, class weights, DRW). None otherwise."""
    already = prior_corrections(dataset, loss) if posthoc_tau is not None else []
    if not already:
        return None
    return (
        f"adj, balanced accuracy after post-hoc logit adjustment (tau {posthoc_tau:g}), corrects for the "
        f"class prior, which this run's {', '.join(already)} already does: adjusting twice over-corrects "
        f"(it favours the rare classes), so read bal, not adj. trainer.posthoc_tau=null leaves adj out."
    )


def build_parts(
    dataset: DataSettings,
    model: DictConfig,
    loss: DictConfig,
    optimizer: DictConfig,
    scheduler: DictConfig | None,
    mixup: DictConfig | None,
    posthoc_tau: float | None = None,
) -> RunParts:
    """Data first (the class names and counts feed the model, the loss and Mixup), then the rest."""
    data = ImageData(dataset)
    columns = data.counts_by_split()
    words = {"train": "training", "valid": "validation", "test": "test"}
    log.info(
        "Data %s: %s; %s",
        dataset.root or data.root,  # as the user typed it; the checkpoint records the absolute path
        ", ".join(
            f"{sum(n):,} {words[split]} images ({within(data.source(split), data.root)})"
            for split, n in columns.items()
        ),
        class_summary(data.class_names, columns),
    )
    unvalidated = [name for name, n in zip(data.class_names, columns["valid"], strict=True) if n == 0]
    if unvalidated:
        log.warning(
            "No validation image for class(es) %s: they are not validated, so they are left out of "
            "balanced accuracy, the G-mean and the shot groups (not counted as recall 0) and marked as "
            "not validated in per_class.csv, metrics.json and the tables.",
            ", ".join(unvalidated),
        )
    advice = imbalance_advice(dataset, loss, columns["train"])
    if advice:
        log.info(advice)
    twice = double_correction(dataset, loss, posthoc_tau)
    if twice:
        log.warning(twice)
    check_first_stage(model, data.class_names)
    parts = RunParts(
        data=data,
        model=instantiate_group(model, "model", num_classes=data.num_classes),
        criterion=instantiate_group(loss, "loss", cls_num_list=data.class_counts, **loss_scale(loss, model)),
        optimizer_factory=instantiate_group(optimizer_node(optimizer)[0], "optimizer"),
        scheduler_factory=instantiate_group(scheduler, "scheduler") if scheduler else None,
        mixup_fn=instantiate_group(mixup, "mixup", num_classes=data.num_classes) if mixup else None,
    )
    params = list(parts.model.parameters())
    log.info(
        "Model %s: %.2fM parameters (%.2fM trained), %s head; loss %s",
        model.name,
        sum(p.numel() for p in params) / 1e6,
        sum(p.numel() for p in params if p.requires_grad) / 1e6,
        model.head,
        type(parts.criterion).__name__,
    )
    return parts


def build_loggers(node: DictConfig | None, sweep_dir: Path | None = None) -> list[Logger]:
    """The logger backends the ``logger`` group chose (``logger=[tensorboard,csv,mlflow]``), each
    from its config and checked against its store where it has a ``check``; a bad setting is a
    UserError naming it, before any data is read."""
    loggers = [instantiate_group(v, f"logger.{k}") for k, v in (node or {}).items() if v]
    for logger in loggers:
        check = getattr(logger, "check", None)
        if check is not None:
            check(sweep_dir)
    return loggers
