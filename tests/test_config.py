"""Every option of every config group composes and builds; overrides reach the built objects."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from conftest import CONFIG_DIR, compose_config
from helpers.rafdb import official_tree
from omegaconf import OmegaConf

from common.errors import UserError
from data.settings import DigitsSettings, ImageFolderSettings, RafDBSettings
from trainer.build import build_parts, model_head
from trainer.config import TrainerConfig
from trainer.shell.settings import validate

GROUPS = ("dataset", "model", "loss", "optimizer", "scheduler", "mixup", "trainer", "experiment")
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted(Path(CONFIG_DIR, g).glob("*.yaml"))]
PUBLIC_KEYS = [
    "dataset.root",
    "dataset.batch_size",
    "dataset.image_size",
    "dataset.num_workers",
    "model.name",
    "optimizer.lr",
    "trainer.epochs",
    "trainer.clip_grad",
    "trainer.ema.enabled",
    "trainer.ema.decay",
    "trainer.amp",
    "trainer.data_parallel",
    "seed",
    "resume",
]


def build_all(cfg):
    validate(cfg)
    cfg.model.head = model_head(cfg.model.head, cfg.loss._target_)
    parts = build_parts(
        OmegaConf.to_object(cfg.dataset), cfg.model, cfg.loss, cfg.optimizer, cfg.scheduler, cfg.mixup
    )
    optimizer = parts.optimizer_factory(parts.model)
    if parts.scheduler_factory is not None:
        parts.scheduler_factory(optimizer, num_epochs=2, updates_per_epoch=3)
    return parts, optimizer, OmegaConf.to_object(cfg.trainer)


def test_every_group_has_options():
    found = {g for g, _ in OPTIONS}
    assert found == set(GROUPS)
    for choice in (
        "dataset/digits",
        "dataset/imagefolder",
        "dataset/rafdb",
        "model/convnextv2",
        "model/convnext",
        "loss/ce",
        "loss/ldam",
        "loss/focal",
        "loss/logit_adjusted",
        "experiment/crt",
        "mixup/none",
        "mixup/default",
    ):
        assert (Path(CONFIG_DIR) / f"{choice}.yaml").is_file(), choice


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_builds(cfg_factory, image_tree, tmp_path, group, option):
    overrides = [f"{group}={option}"]
    cfg = cfg_factory(*overrides)
    if OmegaConf.get_type(cfg.dataset) is not DigitsSettings:
        cfg.dataset.root = str(image_tree)
    if option == "csv":  # the tree's training images, listed in a label file
        rows = [f"{p.relative_to(image_tree)},{p.parent.name}" for p in sorted(image_tree.glob("train/*/*"))]
        (image_tree / "labels.csv").write_text("\n".join(rows))
        cfg.dataset.labels, cfg.dataset.val_fraction = "labels.csv", 0.3
    if option == "rafdb_list":
        cfg.dataset.root = str(official_tree(tmp_path / "basic"))
    cfg.model.pretrained = False  # nothing can be downloaded here; tests/test_models.py covers weights
    if cfg.model.freeze_backbone:  # experiment=crt: a stage-1 weights file to freeze
        cfg.model.checkpoint_path = str(tmp_path / "stage1.pth")
        torch.save(timm.create_model(cfg.model.name, num_classes=4).state_dict(), cfg.model.checkpoint_path)
    parts, optimizer, trainer_config = build_all(cfg)
    assert isinstance(trainer_config, TrainerConfig)
    logits = parts.model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, parts.data.num_classes)
    loss = parts.criterion(logits, torch.tensor([0, 1]))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert optimizer.param_groups[0]["lr"] > 0
    assert (parts.mixup_fn is None) == (cfg.mixup is None or len(cfg.mixup) == 0)


def test_public_keys_exist(cfg_factory):
    cfg = cfg_factory()
    for key in PUBLIC_KEYS:
        assert OmegaConf.select(cfg, key, default="<absent>") != "<absent>", key


def test_overrides_reach_built_objects(cfg_factory):
    cfg = cfg_factory(
        "optimizer.lr=1e-4",
        "trainer.epochs=3",
        "dataset.batch_size=8",
        "model.name=convnext_atto",
        "trainer.ema.decay=0.99",
        "trainer.clip_grad=5.0",
        "loss=ldam",
        "loss.max_m=0.3",
    )
    parts, optimizer, trainer_config = build_all(cfg)
    model, criterion = parts.model, parts.criterion
    assert optimizer.param_groups[0]["initial_lr"] == pytest.approx(1e-4)  # before warm-up
    assert parts.data.settings.batch_size == 8
    assert trainer_config.epochs == 3 and trainer_config.ema.decay == 0.99 and trainer_config.clip_grad == 5.0
    assert model.default_cfg["architecture"] == "convnext_atto"
    assert criterion.margins.max().item() == pytest.approx(0.3)
    # model.head=auto chooses the cosine head for LDAM
    assert type(model.head.fc).__name__ == "CosineClassifier"


def test_ldam_head_can_be_turned_off(cfg_factory):
    parts, _, _ = build_all(cfg_factory("loss=ldam", "model.head=linear"))
    assert type(parts.model.head.fc) is torch.nn.Linear and type(parts.criterion).__name__ == "LDAMLoss"


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("trainer.epochs=0", "trainer.epochs=0"),
        ("trainer.amp_dtype=float8", "trainer.amp_dtype"),
        ("trainer.monitor=val/f2", "trainer.monitor"),
        ("trainer.ema.decay=1.5", "trainer.ema.decay"),
        ("trainer.clip_grad=-1", "trainer.clip_grad"),
        ("trainer.device=tpu", "trainer.device"),
        ("trainer.monitor=val_ema/acc", None),  # valid while EMA is on
    ],
)
def test_trainer_settings_are_validated(cfg_factory, override, words):
    cfg = cfg_factory(override)
    if words is None:
        assert OmegaConf.to_object(cfg.trainer).monitor == "val_ema/acc"
        return
    with pytest.raises(UserError, match=words.replace("/", ".")):
        OmegaConf.to_object(cfg.trainer)


def test_monitor_of_ema_needs_ema(cfg_factory):
    cfg = cfg_factory("trainer.monitor=val_ema/acc", "trainer.ema.enabled=false")
    with pytest.raises(UserError, match="never logged"):
        OmegaConf.to_object(cfg.trainer)


def test_rafdb_recipe_is_the_users():
    cfg = compose_config(["experiment=rafdb_ldam", "dataset.root=/data/RAF"], shrink=False)
    assert cfg.seed == 1 and cfg.optimizer.lr == 1e-5
    assert cfg.dataset.batch_size == 16 and cfg.trainer.epochs == 50
    assert cfg.trainer.amp and cfg.trainer.data_parallel and cfg.trainer.clip_grad == 5.0
    assert cfg.trainer.ema.enabled and cfg.trainer.ema.decay == 0.9998
    mixup = cfg.mixup
    assert (mixup.mixup_alpha, mixup.cutmix_alpha, mixup.cutmix_minmax) == (0.8, 1.0, None)
    assert (mixup.prob, mixup.switch_prob, mixup.mode, mixup.label_smoothing) == (0.1, 0.5, "batch", 0.1)
    assert cfg.loss._target_ == "losses.LDAMLoss" and cfg.loss.drw_epoch == 41
    assert cfg.model.name.startswith("convnextv2") and cfg.model.head == "cosine"
    assert OmegaConf.get_type(cfg.dataset).__name__ == "RafDBSettings"


def test_rafdb_finetune_recipe_uses_the_fine_tuning_tools():
    cfg = compose_config(["experiment=rafdb_finetune", "dataset.root=/data/RAF"], shrink=False)
    assert cfg.optimizer.layer_decay == 0.9 and cfg.optimizer.lr == 1e-4 and cfg.scheduler.warmup_epochs == 3
    assert cfg.dataset.batch_size * cfg.trainer.accumulate_steps == 64
    assert cfg.model.drop_path_rate == 0.2 and cfg.trainer.ema.warmup and cfg.loss.drw_epoch == 26
    trainer = OmegaConf.to_object(cfg.trainer)  # every value passes the trainer's own checks
    assert trainer.monitor == "val/balanced_acc" and trainer.epochs == 30


@pytest.mark.parametrize(
    ("path", "schema"),
    [
        ("dataset/imagefolder.yaml", ImageFolderSettings),
        ("dataset/digits.yaml", DigitsSettings),
        ("dataset/rafdb.yaml", RafDBSettings),
        ("trainer/default.yaml", TrainerConfig),
    ],
)
def test_config_files_set_only_what_differs_from_their_dataclass(path, schema):
    written = OmegaConf.load(Path(CONFIG_DIR) / path)
    defaults = OmegaConf.structured(schema)
    keys = [k for k in written if k != "defaults" and not OmegaConf.is_missing(written, k)]
    assert all(k in defaults for k in keys), keys
    restated = [
        k
        for k in keys
        if OmegaConf.to_container(OmegaConf.create({"v": written[k]}))["v"]
        == (OmegaConf.to_container(OmegaConf.create({"v": defaults[k]}))["v"])
    ]
    assert restated == [], f"{path} restates the defaults of {schema.__name__}: {restated}"
