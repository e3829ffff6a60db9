"""Label files: CSV/TSV/space-separated, names or integers, splits by column, pattern or file,
bad rows counted or refused, RAF-DB's own list read in place, and a test split kept apart."""

from __future__ import annotations

import codecs
import csv
import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, compose_config, make_tree, write_image, write_truncated
from helpers.rafdb import ENTRIES, official_tree
from omegaconf import OmegaConf

from common.errors import UserError
from data.loaders import ImageData
from data.settings import ImageFolderSettings, LabelFileSettings
from train import train

sys.path.insert(0, str(ROOT / "scripts"))
from evaluate import evaluate


def images(folder: Path, names: list[str], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name in names:
        write_image(folder / name, rng, size=16)


def settings(root: Path, **kw) -> LabelFileSettings:
    return LabelFileSettings(root=str(root), image_size=32, num_workers=0, **kw)


def test_a_csv_of_names_with_a_split_column(tmp_path):
    images(tmp_path / "imgs", [f"{i}.png" for i in range(12)])
    rows = [("file", "diagnosis", "fold")]
    split = {5: "valid", 9: "VALID", 6: "test", 11: "test"}
    rows += [(f"{i}.png", "nevus" if i < 7 else "melanoma", split.get(i, "train")) for i in range(12)]
    (tmp_path / "labels.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    data = ImageData(
        settings(
            tmp_path,
            labels="labels.csv",
            image_dir="imgs",
            path_column="file",
            label_column="diagnosis",
            split_column="fold",
        )
    )
    assert data.class_names == ["melanoma", "nevus"]  # sorted, as ImageFolder sorts folders
    assert data.class_counts == [3, 5] and data.counts_by_split() == {
        "train": [3, 5], "valid": [1, 1], "test": [1, 1]
    }  # fmt: skip
    assert data.listing.test == [
        (str(tmp_path / "imgs" / "6.png"), 1),
        (str(tmp_path / "imgs" / "11.png"), 0),
    ]


def test_integer_labels_without_a_header_and_a_carved_split(tmp_path):
    images(tmp_path, [f"a/{i}.jpg" for i in range(20)])
    lines = [f"a/{i}.jpg {1 + (i % 3 != 0) + (i % 5 == 0)}" for i in range(20)]
    (tmp_path / "list.txt").write_text("\n".join(lines))
    data = ImageData(settings(tmp_path, labels="list.txt", first_label=1, val_fraction=0.25))
    assert data.class_names == ["1", "2", "3"]
    labels = [1 + (i % 3 != 0) + (i % 5 == 0) for i in range(20)]
    assert [a + b for a, b in zip(data.class_counts, data.counts_by_split()["valid"], strict=True)] == [
        labels.count(n) for n in (1, 2, 3)
    ]
    named = ImageData(settings(tmp_path, labels="list.txt", first_label=1, val_fraction=0.25,
                               class_names=["low", "mid", "high"]))  # fmt: skip
    assert named.class_names == ["low", "mid", "high"] and named.class_counts == data.class_counts


def test_a_tsv_with_named_columns_in_any_order_and_a_validation_file(tmp_path, caplog):
    images(tmp_path / "x", [f"{i}.png" for i in range(10)])
    (tmp_path / "train.tsv").write_text("label\tpath\n" + "".join(f"{'ab'[i % 2]}\t{i}\n" for i in range(6)))
    (tmp_path / "valid.tsv").write_text(
        "label\tpath\n" + "".join(f"{'ab'[i % 2]}\t{i}\n" for i in range(6, 10))
    )
    data = ImageData(
        settings(
            tmp_path,
            labels="train.tsv",
            val_labels="valid.tsv",
            image_dir="x",
            path_format="{path}.png",
            path_column="path",
            label_column="label",
        )
    )
    assert data.class_counts == [3, 3] and data.counts_by_split()["valid"] == [2, 2]
    assert data.source("valid").endswith("valid.tsv")


def test_a_header_is_detected_when_columns_are_numbered(tmp_path, caplog):
    images(tmp_path, ["a.png", "b.png", "c.png", "d.png"])
    (tmp_path / "l.csv").write_text("image,label\na.png,x\nb.png,y\nc.png,x\nd.png,y\n")
    with caplog.at_level(logging.INFO):
        data = ImageData(settings(tmp_path, labels="l.csv", val_fraction=0.5))
    assert data.class_names == ["x", "y"]  # not a class named "label"
    assert "the first row is taken as a header" in caplog.text


def test_rafdb_s_own_list_is_read_in_place_by_general_settings(tmp_path):
    src = official_tree(tmp_path / "basic")
    cfg = compose_config(["dataset=rafdb_list", f"dataset.root={src}"])
    data = ImageData(OmegaConf.to_object(cfg.dataset))
    assert data.class_names[3] == "happiness" and data.class_counts[3] == 6
    assert sum(data.class_counts) == 15 and len(data.val_dataset) == 8  # the official test validates
    assert data.listing.train[0][0] == str(src / "Image" / "aligned" / "train_00001_aligned.jpg")
    assert data.test_dataset is None


BAD = [  # (a row's text, the kind it is counted as)
    ("missing.png,a", "no such file"),
    ("8.png,zebra", "unknown label"),
    ("1.png,a", "listed twice"),
    ("onlyonecell", "malformed row"),
    ("../0.png,a", "outside dataset.root"),  # another folder's image (the tests' tmp_path parent)
    ("/etc/hostname,a", "outside dataset.root"),  # an absolute path elsewhere
    ("l.csv,a", "not an image"),  # a file that exists, of no image kind: never counted in a class
]


@pytest.mark.parametrize(("row", "kind"), BAD)
def test_bad_rows_are_counted_with_examples_or_refused(tmp_path, caplog, row, kind):
    images(tmp_path, [f"{i}.png" for i in range(9)])  # 8.png: listed only by the zebra row
    good = "".join(f"{i}.png,{'ab'[i % 2]}\n" for i in range(8))
    (tmp_path / "l.csv").write_text(good + row + "\n")
    given = {"labels": "l.csv", "val_fraction": 0.25, "header": False, "class_names": ["a", "b"]}
    with caplog.at_level(logging.WARNING):
        data = ImageData(settings(tmp_path, **given))
    assert sum(data.class_counts) + len(data.val_dataset) == 8
    assert f"1 of 9 rows skipped: {kind} 1 (line 9: " in caplog.text
    with pytest.raises(UserError, match=f"1 of 9 rows cannot be used \\({kind} 1 \\(line 9"):
        ImageData(settings(tmp_path, **given, on_bad_row="error"))


def test_an_unknown_split_and_an_empty_class_and_mostly_bad_rows_are_refused(tmp_path):
    images(tmp_path, [f"{i}.png" for i in range(6)])
    (tmp_path / "l.csv").write_text(
        "".join(f"{i}.png,{'ab'[i % 2]},train\n" for i in range(6)) + "0.png,a,dev\n"
    )
    with pytest.raises(UserError, match="unknown split 1 \\(line 7: 'dev' \\(dataset.split_values knows"):
        ImageData(settings(tmp_path, labels="l.csv", split_column="2", on_bad_row="error"))
    with pytest.raises(UserError, match="Class\\(es\\) c have no train images"):
        ImageData(settings(tmp_path, labels="l.csv", val_fraction=0.5, class_names=["a", "b", "c"]))
    with pytest.raises(
        UserError, match="7 of 7 rows cannot be used .* check dataset.root, dataset.image_dir"
    ):
        ImageData(settings(tmp_path, labels="l.csv", val_fraction=0.5, image_dir="elsewhere", header=False))
    with pytest.raises(UserError, match="gives no validation images: carve them with dataset.val_fraction"):
        ImageData(settings(tmp_path, labels="l.csv"))


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"delimiter": "pipe"}, "is not one of: comma, tab, semicolon, space"),
        ({"split_pattern": "^train_"}, "needs a group in parentheses"),
        ({"path_format": "{name}.jpg"}, "may use {path}"),
        ({"split_values": {"test": "holdout"}}, "must be one of train, valid, test"),
        ({"split_column": "2", "split_pattern": "(a)"}, "both give a row's split"),
    ],
)
def test_label_file_settings_are_checked_before_reading(tmp_path, given, words):
    with pytest.raises(UserError, match=words):
        settings(tmp_path, labels="l.csv", **given)


def test_a_held_out_test_split_is_read_once_after_training_and_reported_beside_validation(tmp_path, caplog):
    """RAF-DB's list with its official test kept apart: the validation split is carved from the
    training images, and the test images are read after the last epoch only."""
    src = official_tree(tmp_path / "basic", entries=ENTRIES * 1)
    write_truncated(src / "Image" / "aligned" / "test_0008_aligned.jpg")  # decoded once, at the end
    overrides = ["dataset=rafdb_list", f"dataset.root={src}", "dataset.split_values.test=test",
                 "dataset.val_fraction=0.3", "dataset.image_size=32", "dataset.batch_size=4",
                 "trainer.epochs=2", "trainer.ema.enabled=false"]  # fmt: skip
    run = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        summary = train(compose_config(overrides), run)
    messages = [r.getMessage() for r in caplog.records]
    last_epoch = max(i for i, m in enumerate(messages) if m.startswith("epoch 2/2") or "epoch   2" in m)
    read = [
        i for i, m in enumerate(messages) if m.startswith("Skipping unreadable image") and "test_0008" in m
    ]
    assert read and min(read) > last_epoch  # the test images were first read after training
    assert "Test (held out, evaluated once, after training) with best.pt, epoch" in caplog.text
    metrics = json.loads((run / "metrics.json").read_text())
    # 8 test images, one unreadable; 4 carved validation images (happiness 2, neutral 1, disgust 1)
    assert metrics["test"]["images"] == 7 and metrics["valid"]["images"] == 4
    assert metrics["test"]["balanced_acc"] == pytest.approx(summary.test.balanced_acc, abs=1e-6)
    rows = list(csv.DictReader((run / "classes.csv").open()))
    assert [r["class"] for r in rows][:2] == ["surprise", "fear"] and sum(int(r["test"]) for r in rows) == 8
    report = evaluate({"checkpoint": str(run / "checkpoints" / "best.pt"), "split": "test", "device": "cpu"})
    assert report["balanced_acc"] == pytest.approx(metrics["test"]["balanced_acc"], abs=1e-4)
    assert report["split"] == "test" and Path(report["output_dir"]).name.endswith("-test")


def test_a_tree_s_test_dir_is_listed_with_the_same_classes_and_evaluate_refuses_a_run_without_one(tmp_path):
    tree = make_tree(tmp_path / "tree", {"a": (4, 2), "b": (3, 2)})
    make_tree(tmp_path / "held", {"a": (2, 0), "b": (1, 0)})
    (tmp_path / "held" / "train").rename(tree / "test")
    data = ImageData(ImageFolderSettings(root=str(tree), image_size=32, num_workers=0, test_dir="test"))
    assert data.counts_by_split() == {"train": [4, 3], "valid": [2, 2], "test": [2, 1]}
    assert data.source("test") == str(tree / "test")
    (tree / "test" / "c").mkdir()
    write_image(tree / "test" / "c" / "0.png", np.random.default_rng(0))
    with pytest.raises(UserError, match=r"only in 'test': \['c'\]"):
        ImageData(ImageFolderSettings(root=str(tree), image_size=32, num_workers=0, test_dir="test"))
    run = tmp_path / "run"
    train(compose_config(["dataset=imagefolder", f"dataset.root={tree}", "trainer.ema.enabled=false"]), run)
    assert not (run / "metrics.json").read_text().count('"test"')  # no test split: none reported
    with pytest.raises(UserError, match="split=test: the run has no test split"):
        evaluate({"checkpoint": str(run / "checkpoints" / "best.pt"), "split": "test", "device": "cpu"})


def test_a_test_split_that_trains_or_validates_is_refused_and_copies_of_seen_images_are_counted(
    tmp_path, caplog
):
    import shutil

    tree = make_tree(tmp_path / "tree", {"a": (4, 2), "b": (3, 2)})
    (tree / "linked").symlink_to(tree / "valid")  # the validation folder under another name

    def listed(test_dir: str) -> ImageData:
        return ImageData(ImageFolderSettings(root=str(tree), image_size=32, num_workers=0, test_dir=test_dir))

    for test_dir, does in (("train", "trains"), ("./valid/", "validates"), ("linked", "validates")):
        said = f"dataset.test_dir='{re.escape(test_dir)}' is the folder the run {does} on"
        with pytest.raises(UserError, match=said):
            listed(test_dir)
    shutil.copytree(tree / "train", tree / "test")  # copies of the training images
    write_image(tree / "test" / "a" / "new.png", np.random.default_rng(99))  # and one image never seen
    caplog.set_level(logging.WARNING)
    data = listed("test")
    assert data.counts_by_split()["test"] == [5, 3]
    assert "7 of the 8 test images are byte-identical to training or validation images" in caplog.text


@pytest.mark.parametrize("typo", ["20000000", "5000"])
def test_an_integer_label_typo_is_refused_naming_its_line_before_classes_are_built(tmp_path, typo):
    images(tmp_path, [f"{i}.png" for i in range(12)])
    labels = [str(i % 3) for i in range(12)]
    labels[7] = typo
    (tmp_path / "list.txt").write_text("".join(f"{i}.png {label}\n" for i, label in enumerate(labels)))
    with pytest.raises(UserError) as refused:
        ImageData(settings(tmp_path, labels="list.txt", val_fraction=0.25))
    message = str(refused.value)
    assert f"line 8: {typo}" in message and "the other rows use 0 to 2" in message
    assert len(message) < 600  # one paragraph, not a list of every class number
    few = [str(i % 3) for i in range(12)]
    few[7] = "9"  # a gap, not a typo: the classes without images are named, at most ten of them
    (tmp_path / "list.txt").write_text("".join(f"{i}.png {label}\n" for i, label in enumerate(few)))
    with pytest.raises(UserError, match=r"Class\(es\) 3, 4, 5, 6, 7, 8 have no"):
        ImageData(settings(tmp_path, labels="list.txt", val_fraction=0.25))


def test_a_utf16_spreadsheet_export_is_read_and_a_header_only_file_is_named(tmp_path):
    images(tmp_path, [f"{i}.png" for i in range(8)])
    text = "file\tmood\n" + "".join(f"{i}.png\t{'été' if i % 2 else 'hiver'}\n" for i in range(8))
    (tmp_path / "unicode.txt").write_bytes(text.encode("utf-16"))  # Excel's "Unicode text": BOM, UTF-16
    data = ImageData(settings(tmp_path, labels="unicode.txt", label_column="mood", path_column="file",
                              val_fraction=0.25))  # fmt: skip
    assert data.class_names == ["hiver", "été"] and sum(data.class_counts) + len(data.val_dataset) == 8
    (tmp_path / "broken.txt").write_bytes(codecs.BOM_UTF16_LE + b"f\x00i\x00\x00\xd8")  # a lone surrogate
    with pytest.raises(UserError, match="starts as UTF-16 .* but is not valid UTF-16: save it as UTF-8"):
        ImageData(settings(tmp_path, labels="broken.txt", val_fraction=0.25))
    (tmp_path / "header.csv").write_text("file,mood\n")
    with pytest.raises(UserError, match="holds a header row and no rows of images \\(file mood\\)"):
        ImageData(settings(tmp_path, labels="header.csv", label_column="mood", path_column="file",
                           val_fraction=0.25))  # fmt: skip


def test_labels_mixing_integers_and_names_or_differing_in_case_are_said_once(tmp_path, caplog):
    images(tmp_path, [f"{i}.png" for i in range(12)])
    labels = ["cat", "Cat", "2"] * 4
    (tmp_path / "l.csv").write_text("".join(f"{i}.png,{label}\n" for i, label in enumerate(labels)))
    with caplog.at_level(logging.WARNING):
        data = ImageData(settings(tmp_path, labels="l.csv", val_fraction=0.25, header=False))
    assert data.class_names == ["2", "Cat", "cat"]  # as written: the warnings say what that means
    assert caplog.text.count("The labels mix integers (2) and names (Cat, cat)") == 1
    assert caplog.text.count("Labels that differ only in case are separate classes: Cat / cat") == 1
    caplog.clear()
    (tmp_path / "l.csv").write_text("".join(f"{i}.png,{'ab'[i % 2]}\n" for i in range(12)))
    with caplog.at_level(logging.WARNING):
        ImageData(settings(tmp_path, labels="l.csv", val_fraction=0.25, header=False))
    assert "mix integers" not in caplog.text and "differ only in case" not in caplog.text
