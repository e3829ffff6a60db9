"""ImageFolder trees, their up-front checks, the built-in digits, and loader behaviour."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config, make_tree, write_image
from PIL import Image

from common.errors import UserError
from data.digits import long_tail_counts, prepare_digits
from data.images import load_rgb
from data.loaders import ImageData
from data.samplers import class_balanced_weights
from data.settings import DigitsSettings, ImageFolderSettings, RafDBSettings


def folder(root: Path, **kw) -> ImageData:
    return ImageData(ImageFolderSettings(root=str(root), image_size=32, batch_size=4, num_workers=0, **kw))


def test_digits_tree_is_long_tailed_and_cached(digits_cache):
    data = ImageData(DigitsSettings(root=str(digits_cache), image_size=32, num_workers=0))
    counts = data.class_counts
    assert data.class_names == [str(d) for d in range(10)]
    assert counts == sorted(counts, reverse=True)
    assert counts[0] / counts[-1] == pytest.approx(10, rel=0.1)
    assert counts == long_tail_counts(counts[0], 10, 10.0)
    val_counts = torch.bincount(torch.tensor(data.val_dataset.targets)).tolist()
    assert val_counts == [50] * 10
    image, label, index = data.train_dataset[0]
    assert index == 0
    assert image.shape == (3, 32, 32) and label == 0
    # cached: a second call returns the same tree without rewriting it
    tree = Path(data.root)
    stamp = os.stat(tree / "train" / "0").st_mtime_ns
    assert prepare_digits(digits_cache, 10.0, 50, 0) == tree
    assert os.stat(tree / "train" / "0").st_mtime_ns == stamp


def test_digits_imbalance_ratio_is_configurable(tmp_path):
    data = ImageData(DigitsSettings(root=str(tmp_path), imbalance_ratio=1, val_per_class=20, num_workers=0))
    assert len(set(data.class_counts)) == 1


def test_tree_classes_counts_and_modes(tmp_path):
    root = make_tree(
        tmp_path, {"a b": (5, 2), "ünï": (3, 2)}, modes=("RGB", "L", "RGBA", "P", "CMYK", "I;16")
    )
    data = folder(root)
    assert data.class_names == ["a b", "ünï"]
    assert data.class_counts == [5, 3]
    for i in range(len(data.train_dataset)):
        image, _, _ = data.train_dataset[i]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32


def test_rafdb_reports_emotion_names(tmp_path):
    numbered = make_tree(tmp_path / "a", {str(i): (1, 1) for i in range(1, 8)})
    named = make_tree(tmp_path / "b", {e: (1, 1) for e in ("anger", "fear")})
    assert ImageData(RafDBSettings(root=str(numbered), num_workers=0)).class_names == [
        "surprise",
        "fear",
        "disgust",
        "happiness",
        "sadness",
        "anger",
        "neutral",
    ]
    assert ImageData(RafDBSettings(root=str(named), num_workers=0)).class_names == ["anger", "fear"]


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda r: r / "nowhere", "dataset.root="),
        (lambda r: (os.rename(r / "valid", r / "val"), r)[1], "dataset.val_dir='valid'"),
        (lambda r: ((r / "train" / "empty").mkdir(), (r / "valid" / "empty").mkdir(), r)[2], "'empty'"),
        (lambda r: ((r / "valid" / "extra").mkdir(), r)[1], "only in 'valid': ['extra']"),
    ],
    ids=["missing-root", "missing-split", "empty-class", "class-mismatch"],
)
def test_bad_trees_are_refused_with_names(image_tree, mutate, words):
    root = mutate(image_tree)
    if words == "only in 'valid': ['extra']":
        make_tree(root, {"extra": (0, 1)})
    with pytest.raises(UserError, match=words.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        folder(root)


def test_mixup_drops_an_odd_last_batch_only(image_tree):
    data = folder(image_tree)  # 23 training images, batch 4: last batch of 3
    gen = torch.Generator().manual_seed(0)
    assert len(data.train_loader(gen)) == 6
    loader = data.train_loader(gen, even_batches=True)
    assert len(loader) == 5
    assert all(len(x) % 2 == 0 for x, _ in loader)
    with pytest.raises(UserError, match="dataset.batch_size must be even"):
        ImageData(ImageFolderSettings(root=str(image_tree), batch_size=5, num_workers=0)).train_loader(
            gen, even_batches=True
        )


def test_balanced_sampler_draws_classes_equally(image_tree):
    data = folder(image_tree, sampler="balanced")
    weights = class_balanced_weights(data.train_dataset.targets)
    per_class = torch.zeros(3, dtype=torch.float64).index_add_(
        0, torch.tensor(data.train_dataset.targets), weights
    )
    assert torch.allclose(per_class, torch.ones(3, dtype=torch.float64))
    draws = [list(data.train_loader(torch.Generator().manual_seed(s)).loader.sampler) for s in (1, 1, 2)]
    assert draws[0] == draws[1] != draws[2]  # reproducible from the seed


def test_bad_dataset_settings_are_refused_without_reading_the_tree(tmp_path):
    nowhere = str(tmp_path / "nowhere")  # the settings alone are checked: no folder is looked at
    with pytest.raises(UserError, match="dataset.batch_size=0"):
        ImageFolderSettings(root=nowhere, batch_size=0)
    with pytest.raises(UserError, match=r"dataset.mean=\[0.5\] must be 3 numbers"):
        ImageFolderSettings(root=nowhere, mean=[0.5])
    with pytest.raises(
        UserError, match="dataset.std=.* must be 3 numbers, one per RGB channel .all positive"
    ):
        ImageFolderSettings(root=nowhere, std=[0.2, 0.0, 0.2])
    with pytest.raises(UserError, match="dataset.imbalance_ratio=0.5 must be at least 1"):
        DigitsSettings(root=nowhere, imbalance_ratio=0.5)


def test_bad_dataset_settings(image_tree):
    with pytest.raises(UserError, match="dataset.sampler='uniform'"):
        folder(image_tree, sampler="uniform")
    with pytest.raises(UserError, match="dataset.hflip=2"):
        folder(image_tree, hflip=2)


def corrupt_tree(root: Path) -> Path:
    """A 3-class tree plus a truncated JPEG, a text file named .png, a note, a 16-bit PNG, a huge JPEG."""
    make_tree(root, {"cat": (6, 2), "dog": (5, 2), "fox": (4, 2)})
    rng = np.random.default_rng(0)
    write_image(root / "train" / "cat" / "whole.jpg", rng, size=64)
    data = (root / "train" / "cat" / "whole.jpg").read_bytes()
    (root / "train" / "cat" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "train" / "dog" / "not_an_image.png").write_text("hello")
    (root / "train" / "dog" / "notes.txt").write_text("ignored: not an image extension")
    deep = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16  # 0 .. 65520
    Image.fromarray(deep).save(root / "train" / "fox" / "sixteen_bit.png")
    Image.fromarray(rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8)).save(
        root / "train" / "fox" / "huge.jpg"
    )
    return root


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_images_are_skipped_with_a_warning(tmp_path, caplog, workers):
    root = corrupt_tree(tmp_path / "tree")
    data = ImageData(ImageFolderSettings(root=str(root), image_size=32, batch_size=4, num_workers=workers))
    loader = data.train_loader(torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING):
        seen = sum(len(x) for x, _ in loader)
    # notes.txt is not listed at all; not_an_image.png is left out at the scan (its header does not open)
    assert len(data.train_dataset) == 6 + 1 + 1 + 5 + 4 + 2 and data.class_counts == [8, 5, 6]
    assert seen == len(data.train_dataset) - 1
    assert [Path(p).name for p in loader.skipped] == ["truncated.jpg"]  # its header opens: found when decoded
    assert "truncated.jpg" in caplog.text and "not_an_image.png (not an image PIL can read)" in caplog.text


def test_unreadable_image_policy_error_names_the_file(tmp_path):
    root = corrupt_tree(tmp_path / "tree")
    settings = ImageFolderSettings(
        root=str(root), image_size=32, batch_size=64, num_workers=0, on_bad_image="error"
    )
    with pytest.raises(UserError, match=r"1 listed image\(s\) cannot be opened: .*not_an_image\.png"):
        ImageData(settings)  # at the scan, from its header
    (root / "train" / "dog" / "not_an_image.png").unlink()
    data = ImageData(settings)
    with pytest.raises(UserError, match=r"truncated\.jpg could not be read"):  # when it is decoded
        for _ in data.train_loader(torch.Generator().manual_seed(0)):
            pass


def test_sixteen_bit_and_huge_images_load_sensibly(tmp_path):
    root = corrupt_tree(tmp_path / "tree")
    deep = load_rgb(str(root / "train" / "fox" / "sixteen_bit.png"), target_size=32)
    assert deep.mode == "RGB" and 100 < np.asarray(deep).mean() < 160  # scaled from 16 bits, not clipped
    huge = load_rgb(str(root / "train" / "fox" / "huge.jpg"), target_size=32)
    assert huge.mode == "RGB" and max(huge.size) <= 1000  # decoded at a reduced scale


def test_cached_images_give_the_same_tensors_and_still_report_bad_files(tmp_path):
    root = corrupt_tree(tmp_path / "tree")
    plain = ImageData(ImageFolderSettings(root=str(root), image_size=32, batch_size=4, num_workers=0))
    cached = ImageData(
        ImageFolderSettings(root=str(root), image_size=32, batch_size=4, num_workers=0, cache_images=True)
    )
    assert cached.val_dataset.cache is not None and plain.val_dataset.cache is None
    for i in range(len(plain.val_dataset)):
        assert torch.equal(plain.val_dataset[i][0], cached.val_dataset[i][0])
    loader = cached.train_loader(torch.Generator().manual_seed(0))
    assert sum(len(x) for x, _ in loader) == len(cached.train_dataset) - 1
    assert len(loader.skipped) == 1


def test_a_class_whose_every_training_image_cannot_be_opened_is_refused(tmp_path):
    root = make_tree(tmp_path / "tree", {"cat": (4, 2), "dog": (4, 2), "fox": (3, 2)})
    for path in (root / "train" / "fox").iterdir():
        path.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(UserError, match=r"No training image of class\(es\) fox can be opened: .*000\.png"):
        ImageData(ImageFolderSettings(root=str(root), image_size=32, num_workers=0))


def test_looping_links_and_repeated_files_count_each_image_once(tmp_path, caplog):
    tree = make_tree(tmp_path / "tree", {"few": (4, 2), "many": (10, 2)})
    few = tree / "train" / "few"
    os.symlink(".", few / "loop")  # os.walk with followlinks would go round dozens of times
    os.symlink("..", few / "up")  # the split folder: it would bring in the other class's images
    os.symlink(few / "000.png", few / "again.png")  # the same file under a second name
    elsewhere = make_tree(tmp_path / "elsewhere", {"x": (3, 0)}) / "train" / "x"
    os.symlink(elsewhere, few / "linked")  # images kept elsewhere are still read, once
    with caplog.at_level(logging.WARNING):
        data = ImageData(ImageFolderSettings(root=str(tree), image_size=32, num_workers=0))
    assert data.class_counts == [4 + 3, 10]
    assert len(data.train_dataset) == 17 and sum(t == 0 for t in data.train_dataset.targets) == 7
    assert "3 link(s) lead to folders or images already counted" in caplog.text


def test_a_single_class_tree_is_refused(tmp_path):
    root = make_tree(tmp_path / "one", {"only": (3, 2)})
    with pytest.raises(
        UserError, match="holds one class folder only \\('only'\\); a classifier needs at least two"
    ):
        ImageData(ImageFolderSettings(root=str(root), image_size=32, num_workers=0))


def test_gifs_are_images_and_other_files_are_counted_once_per_split(tmp_path, caplog):
    tree = make_tree(tmp_path / "tree", {"a": (3, 2), "b": (3, 2)})
    frames = [Image.new("RGB", (20, 20), (i * 60, 0, 0)) for i in range(3)]
    frames[0].save(tree / "train" / "a" / "moving.gif", save_all=True, append_images=frames[1:])
    (tree / "train" / "a" / "notes.txt").write_text("not an image")
    (tree / "train" / "b" / "labels.json").write_text("{}")
    (tree / "train" / "b" / "more.txt").write_text("")
    (tree / "train" / "b" / ".DS_Store").write_bytes(b"\0")  # hidden files are nobody's data
    with caplog.at_level(logging.WARNING):
        data = ImageData(ImageFolderSettings(root=str(tree), image_size=32, num_workers=0))
    assert data.class_counts == [4, 3]  # the animated GIF is read (its first frame)
    assert data.train_dataset[
        [p for p, _ in data.train_dataset.samples].index(str(tree / "train" / "a" / "moving.gif"))
    ][0].shape == (3, 32, 32)
    warnings = [r.getMessage() for r in caplog.records if "not images were ignored" in r.getMessage()]
    assert len(warnings) == 1 and "3 file(s)" in warnings[0] and ".txt: 2, .json: 1" in warnings[0]
    assert "DS_Store" not in caplog.text


def test_repeat_factor_sampling_repeats_rare_classes_by_the_square_root_rule():
    from data.samplers import RepeatFactorSampler, repeat_factors

    targets = [0] * 80 + [1] * 16 + [2] * 4  # shares 0.8, 0.16, 0.04
    factors = repeat_factors(targets, threshold=0.25)
    expected = {0: 1.0, 1: (0.25 / 0.16) ** 0.5, 2: (0.25 / 0.04) ** 0.5}  # max(1, sqrt(t / f)): 1, 1.25, 2.5
    assert factors.tolist() == pytest.approx([expected[t] for t in targets])
    assert repeat_factors(targets)[-1] == pytest.approx((1 / 3 / 0.04) ** 0.5)  # t = 1 / classes
    sampler = RepeatFactorSampler(targets, 0.25, torch.Generator().manual_seed(0))
    assert len(sampler) == round(80 + 16 * 1.25 + 4 * 2.5) == 110
    seen = torch.zeros(len(targets))
    epochs = 400
    for _ in range(epochs):
        order = list(sampler)
        assert len(order) == 110
        counts = torch.bincount(torch.tensor(order), minlength=len(targets))
        assert (counts >= factors.floor()).all() and (counts <= factors.ceil()).all()  # floor or one more
        seen += counts
    assert (seen / epochs).tolist() == pytest.approx(factors.tolist(), abs=0.08)  # about r_i an epoch


def test_dataset_sampler_repeat_factor_sets_the_epoch_length(image_tree):
    data = ImageData(
        ImageFolderSettings(
            root=str(image_tree), batch_size=4, num_workers=0, sampler="repeat_factor", repeat_threshold=0.5
        )
    )  # counts 12, 7, 4 of 23: factors 1, sqrt(0.5 / (7/23)), sqrt(0.5 / (4/23))
    expected = round(12 + 7 * (0.5 * 23 / 7) ** 0.5 + 4 * (0.5 * 23 / 4) ** 0.5)
    loader = data.train_loader(torch.Generator().manual_seed(0))
    assert sum(len(targets) for _, targets in loader) == expected
    with pytest.raises(UserError, match="repeat_threshold=2.0 is a share"):
        ImageFolderSettings(root=str(image_tree), sampler="repeat_factor", repeat_threshold=2.0)


JSON_SOURCE = '''
"""A data source written outside the project: images listed in a JSON file."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from data.settings import DataSettings


@dataclass
class JsonLabelSettings(DataSettings):
    name: ClassVar[str | None] = "json"
    labels: str = "labels.json"  # [{"path": ..., "label": ..., "split": "train" | "valid"}, ...]

    def listing(self, root: Path, splits):
        from data.listing import Listing

        rows = json.loads((root / self.labels).read_text())
        classes = sorted({row["label"] for row in rows})
        by_split = {
            split: [(str(root / r["path"]), classes.index(r["label"])) for r in rows if r["split"] == split]
            for split in ("train", "valid")
        }
        sources = {split: f"{self.labels}, {split}" for split in by_split}
        return Listing(classes, by_split["train"], by_split["valid"], [], root, sources)
'''


def test_a_data_source_is_one_module_and_one_yaml(tmp_path, monkeypatch):
    """A JSON label source: its settings and listing in one module, its schema named by one YAML."""
    import json

    import data
    from train import train
    from trainer.shell.registry import register_configs

    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "json_source.py").write_text(JSON_SOURCE)
    monkeypatch.setattr(data, "__path__", [*data.__path__, str(tmp_path / "modules")])
    register_configs()  # finds data/*_source.py modules, this one too
    yaml = tmp_path / "configs" / "dataset" / "json.yaml"
    yaml.parent.mkdir(parents=True)
    yaml.write_text("defaults:\n  - /schema/dataset@_here_: json\n  - _self_\nbatch_size: 4\n")
    rng = np.random.default_rng(0)
    rows = []
    for label, (train_n, valid_n) in {"cat": (6, 2), "dog": (4, 2)}.items():
        for i in range(train_n + valid_n):
            path = f"img/{label}{i}.png"
            write_image(tmp_path / "data" / path, rng)
            rows.append({"path": path, "label": label, "split": "train" if i < train_n else "valid"})
    (tmp_path / "data" / "labels.json").write_text(json.dumps(rows))
    given = [f"hydra.searchpath=[file://{tmp_path / 'configs'}]", "dataset=json"]
    summary = train(compose_config([*given, f"dataset.root={tmp_path / 'data'}"]), tmp_path / "run")
    assert summary.class_names == ["cat", "dog"] and summary.class_counts == [6, 4]
    assert sum(map(sum, summary.final["val"].confusion_matrix)) == 4


def test_the_start_says_what_training_images_go_through_and_warns_of_small_ones_enlarged(tmp_path, caplog):
    from data.loaders import ImageData
    from data.settings import ImageFolderSettings

    tree = make_tree(tmp_path / "tree", {"a": (4, 2), "b": (4, 2)})  # 20-px images
    settings = {"root": str(tree), "num_workers": 0, "color_jitter": 0.0}
    with caplog.at_level(logging.INFO):
        ImageData(ImageFolderSettings(**settings, image_size=32))
    said = "Training at 32 px from images of about 20 px (median shorter side): random-resized crops of "
    assert said in caplog.text and "horizontal flips 50% of the time, colour jitter 0" in caplog.text
    assert "times enlarged" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        ImageData(ImageFolderSettings(**settings, image_size=224, hflip=0.0))
    assert "horizontal flips off" in caplog.text
    assert "about 20 px and train at dataset.image_size=224, 11 times enlarged" in caplog.text
