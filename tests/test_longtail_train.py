"""End to end: classifier re-training, collapse warnings, long-tail metrics, crop scales from the data."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config, make_tree
from helpers.runs import TREE
from PIL import Image

from common.errors import UserError
from train import train


def test_crt_retrains_only_the_classifier(cfg_factory, tmp_path, caplog):
    stage1 = tmp_path / "stage1"
    train(cfg_factory("trainer.ema.enabled=false"), stage1)
    first = torch.load(stage1 / "checkpoints" / "last.pt", weights_only=True)
    with caplog.at_level(logging.INFO):
        summary = train(
            cfg_factory(
                "experiment=crt",
                f"model.checkpoint_path={stage1}/checkpoints/last.pt",
                "trainer.epochs=1",
                "trainer.ema.enabled=false",
            ),
            tmp_path / "crt",
        )
    second = torch.load(tmp_path / "crt" / "checkpoints" / "last.pt", weights_only=True)
    config = second["config"]
    assert config["dataset"]["sampler"] == "balanced" and config["model"]["freeze_backbone"]
    head = "head.fc."
    for name, tensor in first["model"].items():
        if name.startswith(head):
            assert not torch.equal(tensor, second["model"][name]), name  # re-initialised and trained
        else:
            assert torch.equal(tensor, second["model"][name]), name  # bit-identical backbone
    # the optimizer holds state for the classifier's weight and bias only
    assert len(second["optimizer"]["state"]) == 2
    assert summary.final["val"].balanced_acc > 0.3


def test_crt_needs_its_stage_one_checkpoint(cfg_factory, tmp_path):
    with pytest.raises(UserError, match="model.freeze_backbone=true .* model.checkpoint_path=FILE"):
        train(cfg_factory("experiment=crt"), tmp_path / "run")


def write_blank_tree(root: Path, counts: dict[str, tuple[int, int]]) -> Path:
    """Every image the same grey square: nothing to learn, so any model predicts one class for all."""
    for name, (n_train, n_val) in counts.items():
        for split, n in (("train", n_train), ("valid", n_val)):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (20, 20), (128, 128, 128)).save(root / split / name / f"{i}.png")
    return root


def test_a_collapsed_run_is_warned_about(cfg_factory, tmp_path, caplog):
    tree = write_blank_tree(tmp_path / "blank", {"a": (12, 3), "b": (6, 3), "c": (4, 3)})
    with caplog.at_level(logging.WARNING):
        train(cfg_factory(*TREE, f"dataset.root={tree}", "trainer.epochs=2"), tmp_path / "run")
    warnings = [r for r in caplog.records if "PREDICTIONS COLLAPSED" in r.message]
    assert len(warnings) == 1 and "at epoch 2" in warnings[0].message
    assert "every validation image is predicted as class" in warnings[0].message


def test_crop_scale_is_chosen_from_the_image_size(cfg_factory, image_tree, tmp_path, caplog):
    small = [f"dataset.root={image_tree}", "dataset=imagefolder", "dataset.batch_size=4"]
    with caplog.at_level(logging.INFO):
        train(cfg_factory(*small), tmp_path / "auto")
    assert "about 20 px" in caplog.text and "[0.35, 1.0]" in caplog.text
    saved = torch.load(tmp_path / "auto" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["config"]["dataset"]["scale"] is None  # the run's config as given; the choice is logged
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        train(cfg_factory(*small, "dataset.scale=[0.08,1.0]"), tmp_path / "hard")
    assert "crops as little as 8% of images that are only about 20 px" in caplog.text
    large = tmp_path / "large"
    rng = np.random.default_rng(0)
    for split in ("train", "valid"):
        for name in ("x", "y"):
            (large / split / name).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(large / split / name / f"{i}.png")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train(
            cfg_factory("dataset=imagefolder", f"dataset.root={large}", "dataset.batch_size=2"),
            tmp_path / "l",
        )
    assert "about 96 px" in caplog.text and "[0.08, 1.0]" in caplog.text


def test_a_second_stage_refuses_a_first_stage_of_other_classes(cfg_factory, tmp_path, caplog):
    from conftest import make_tree

    first = make_tree(tmp_path / "first", {"cat": (6, 2), "dog": (4, 2), "fox": (3, 2)})
    stage1 = tmp_path / "stage1"
    train(cfg_factory(*TREE, f"dataset.root={first}", "trainer.ema.enabled=false"), stage1)
    weights = f"model.checkpoint_path={stage1}/checkpoints/last.pt"
    fewer = make_tree(tmp_path / "fewer", {"cat": (6, 2), "dog": (4, 2)})
    renamed = make_tree(tmp_path / "renamed", {"cat": (6, 2), "dog": (4, 2), "owl": (3, 2)})
    for experiment in ("crt", "wb_stage2", "mislas_stage2"):
        for tree, said in (
            (fewer, "3 classes \\['cat', 'dog', 'fox'\\], but the data has 2"),
            (renamed, "'owl'"),
        ):
            run = tmp_path / f"{experiment}_{tree.name}"
            with pytest.raises(UserError, match=said):
                train(cfg_factory(f"experiment={experiment}", *TREE, f"dataset.root={tree}", weights), run)
            assert not (run / "checkpoints").exists()  # refused before training
    # a whole fine-tune with a new classifier may take other classes; the log says so
    with caplog.at_level(logging.INFO):
        fine_tune = [*TREE, f"dataset.root={fewer}", weights, "model.reinit_head=true"]
        summary = train(cfg_factory(*fine_tune), tmp_path / "fine_tune")
    assert summary.class_names == ["cat", "dog"] and "trained on 3 other classes" in caplog.text


def test_a_run_that_does_nothing_about_a_strong_imbalance_is_told_the_measured_recipe(tmp_path, caplog):
    from omegaconf import OmegaConf

    from trainer.build import imbalance_advice

    tree = make_tree(tmp_path / "tree", {"many": (20, 2), "few": (2, 2)})
    with caplog.at_level(logging.INFO):
        train(compose_config(["dataset=imagefolder", f"dataset.root={tree}"]), tmp_path / "run")
    assert "largest has 10 times the images of the smallest" in caplog.text
    assert "dataset.sampler=repeat_factor" in caplog.text

    def advice(*overrides: str, counts: tuple[int, ...] = (20, 2)) -> str | None:
        cfg = compose_config(["dataset=imagefolder", "dataset.root=/nowhere", *overrides])
        return imbalance_advice(OmegaConf.to_object(cfg.dataset), cfg.loss, list(counts))

    assert advice() is not None
    assert advice(counts=(19, 2)) is None  # below ratio 10
    assert advice(counts=(20, 0, 2)) is not None  # a class without training images is not "the smallest"
    for chosen in ("dataset.sampler=repeat_factor", "dataset.sampler=balanced", "loss=ldam", "loss=focal",
                   "loss=logit_adjusted", "loss.class_weights=balanced", "loss.drw_epoch=2",
                   "experiment=crt"):  # fmt: skip
        assert advice(chosen) is None, chosen


def test_post_hoc_adjustment_shown_on_a_run_that_already_corrects_for_the_prior_is_said_to_over_correct():
    from omegaconf import OmegaConf

    from trainer.build import double_correction

    def said(*overrides: str, tau: float | None = 1.0) -> str | None:
        cfg = compose_config(["dataset=imagefolder", "dataset.root=/nowhere", *overrides])
        return double_correction(OmegaConf.to_object(cfg.dataset), cfg.loss, tau)

    assert said() is None and said("loss=ldam") is None and said("loss=focal") is None  # adj applies
    cases = [
        ("dataset.sampler=repeat_factor", "dataset.sampler=repeat_factor"),
        ("loss.drw_epoch=3", "loss.drw_epoch"),
        ("loss=logit_adjusted", "LogitAdjustedLoss"),
        ("experiment=rafdb_ldam", "drw"),
    ]
    for chosen, named in cases:
        text = said(chosen)
        assert text is not None and named in text and "read bal, not adj" in text, chosen
    assert said("dataset.sampler=repeat_factor", tau=None) is None  # adj not shown: nothing to say
