"""RAF-DB: the official layout prepared into ImageFolder trees, refusals, and the recipe end to end."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, write_image
from helpers.rafdb import official_tree

from common.errors import UserError
from data.rafdb import EMOTIONS, prepare_rafdb
from train import train

# (official name, label 1-7): an imbalanced little RAF-DB with both splits


def test_prepare_writes_emotion_folders_by_hard_link(tmp_path):
    src, dst = official_tree(tmp_path / "basic"), tmp_path / "RAF"
    counts = prepare_rafdb(src, dst)
    assert counts["train"]["happiness"] == 6 and counts["train"]["neutral"] == 3
    assert sum(counts["valid"].values()) == 8 and counts["valid"]["happiness"] == 2
    assert sorted(os.listdir(dst / "train")) == sorted(EMOTIONS)
    linked = dst / "train" / "happiness" / "train_00001_aligned.jpg"
    assert os.path.samefile(linked, src / "Image" / "aligned" / "train_00001_aligned.jpg")
    assert prepare_rafdb(src, dst) == counts  # re-running is safe
    assert len(os.listdir(dst / "train" / "happiness")) == 6


@pytest.mark.parametrize(
    ("breakage", "words"),
    [
        ("no-labels", "list_patition_label.txt not found"),
        ("label-without-image", "are not in"),
        ("image-without-label", "have no label"),
        ("unknown-label", "line 24: 'train_00099.jpg 8'"),
        ("bad-prefix", "starts neither with 'train_' nor 'test_'"),
        ("duplicate", "listed twice"),
    ],
)
def test_incomplete_or_inconsistent_sources_are_refused(tmp_path, breakage, words):
    src = official_tree(tmp_path / "basic")
    labels, aligned = src / "EmoLabel" / "list_patition_label.txt", src / "Image" / "aligned"
    if breakage == "no-labels":
        labels.unlink()
    elif breakage == "label-without-image":
        (aligned / "test_0003_aligned.jpg").unlink()
    elif breakage == "image-without-label":
        write_image(aligned / "train_09999_aligned.jpg", np.random.default_rng(1))
    elif breakage == "unknown-label":
        labels.write_text(labels.read_text() + "train_00099.jpg 8\n")
    elif breakage == "bad-prefix":
        labels.write_text(labels.read_text() + "val_0001.jpg 3\n")
    else:
        labels.write_text(labels.read_text() + "train_00001.jpg 4\n")
    with pytest.raises(UserError, match=words):
        prepare_rafdb(src, tmp_path / "RAF")
    assert not (tmp_path / "RAF").exists()  # nothing written from a bad source


def test_script_prints_counts_and_refuses_with_a_message(tmp_path):
    src = official_tree(tmp_path / "basic")
    script = [sys.executable, str(ROOT / "scripts" / "prepare_rafdb.py")]
    out = subprocess.run([*script, f"src={src}", f"dst={tmp_path / 'RAF'}"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "happiness        6       2" in out.stdout
    bad = subprocess.run(
        [*script, f"src={tmp_path}", f"dst={tmp_path / 'x'}"], capture_output=True, text=True
    )
    assert bad.returncode != 0 and "list_patition_label.txt not found" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_recipe_trains_on_a_prepared_tree(cfg_factory, tmp_path):
    dst = tmp_path / "RAF"
    prepare_rafdb(official_tree(tmp_path / "basic"), dst)
    cfg = cfg_factory(
        "experiment=rafdb_ldam",
        f"dataset.root={dst}",
        "model.name=convnextv2_atto",
        "model.pretrained=false",
        "dataset.image_size=32",
        "dataset.batch_size=4",
        "trainer.epochs=1",
        "trainer.device=cpu",
    )
    train(cfg, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["class_names"] == sorted(EMOTIONS)
    assert state["class_counts"][state["class_names"].index("happiness")] == 6
