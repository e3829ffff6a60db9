"""One tree, split here: a stratified validation fraction and stratified k-fold, the same split in a
resume and in evaluate.py, and the summary over the folds of a fold sweep."""

from __future__ import annotations

import csv
import json
import logging
import statistics
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config, make_tree, write_image
from evaluate import evaluate
from predict import predict

from common.errors import UserError
from data.split import fold_split, fraction_split
from train import train
from trainer.shell.folds import summary
from trainer.shell.sweep_table import summarise

TREE = ["dataset=imagefolder", "dataset.batch_size=4", "trainer.ema.enabled=false"]


def samples(counts: dict[int, int]) -> list[tuple[str, int]]:
    return [(f"c{label}/{i:03d}.png", label) for label, n in counts.items() for i in range(n)]


def test_a_fraction_of_each_class_validates_and_a_class_of_two_is_on_both_sides():
    split = fraction_split(samples({0: 50, 1: 10, 2: 2, 3: 1}), 0.2, seed=0)
    val, train_ = Counter(label for _, label in split.val), Counter(label for _, label in split.train)
    assert dict(val) == {0: 10, 1: 2, 2: 1} and dict(train_) == {0: 40, 1: 8, 2: 1, 3: 1}
    assert split.unsplit == [3]  # one image: it trains, and the log says so
    assert fraction_split(samples({0: 50, 1: 10, 2: 2, 3: 1}), 0.2, seed=0) == split  # reproducible
    assert fraction_split(samples({0: 50, 1: 10, 2: 2, 3: 1}), 0.2, seed=1).val != split.val


def test_five_folds_partition_every_class_in_proportion():
    data = samples({0: 53, 1: 17, 2: 6, 3: 3})
    folds = [fold_split(data, 5, i, seed=0) for i in range(5)]
    vals = [set(f.val) for f in folds]
    assert set().union(*vals) == set(data) and sum(map(len, vals)) == len(data)  # a partition
    for label, n in {0: 53, 1: 17, 2: 6, 3: 3}.items():
        sizes = [sum(1 for _, c in f.val if c == label) for f in folds]
        assert max(sizes) - min(sizes) <= 1 and all(abs(s - n / 5) < 1 for s in sizes)  # stratified
    assert all(set(f.train) == set(data) - set(f.val) for f in folds)
    assert folds[0].unsplit == [3]  # 3 images, 5 folds: two folds validate without that class


def test_a_carved_split_is_written_recorded_and_the_same_in_evaluate_and_a_resume(tmp_path):
    tree = make_tree(tmp_path / "tree", {"a": (12, 0), "b": (6, 0), "c": (2, 0)})
    settings = [*TREE, f"dataset.root={tree}", "dataset.val_fraction=0.25", "dataset.val_dir=nowhere"]
    run = tmp_path / "run"
    summary_ = train(compose_config(settings), run)
    rows = list(csv.DictReader((run / "split.csv").open()))
    assert Counter((r["class"], r["split"]) for r in rows) == {
        ("a", "train"): 9, ("a", "valid"): 3, ("b", "train"): 4, ("b", "valid"): 2,
        ("c", "train"): 1, ("c", "valid"): 1,
    }  # fmt: skip
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["class_counts"] == [9, 4, 1] and state["config"]["split"]["validation_images"] == 6
    report = evaluate({"checkpoint": str(run / "checkpoints" / "last.pt"), "device": "cpu"})
    assert report["images"] == 6 and report["balanced_acc"] == pytest.approx(
        summary_.final["val"].balanced_acc
    )
    assert "a 0.25 split (split_seed 0)" in report["data"]
    before = (run / "split.csv").read_text()
    resumed = train(compose_config([*settings, "trainer.epochs=2", "resume=auto"]), run)
    assert resumed.epoch == 2 and (run / "split.csv").read_text() == before  # the same images
    # renamed images move the split (the counts stay): the resume says so instead of validating on others
    for image in sorted((tree / "train" / "a").iterdir())[:6]:
        image.rename(image.with_name(f"renamed_{image.name}"))
    with pytest.raises(
        UserError, match=r"split.validation_set '[0-9a-f]{16}' -> '[0-9a-f]{16}' \(split"
    ) as err:
        train(compose_config([*settings, "trainer.epochs=3", "resume=auto"]), run)
    assert "training images per class" not in str(err.value)
    write_image(tree / "train" / "b" / "added.png", np.random.default_rng(1))  # and counts: named too
    with pytest.raises(UserError, match="b 4 -> 5"):
        train(compose_config([*settings, "trainer.epochs=3", "resume=auto"]), run)


def test_the_fold_summary_is_the_mean_and_sd_of_each_folds_best_epoch(tmp_path, caplog):
    import yaml
    from omegaconf import OmegaConf

    from trainer.shell.sweep_table import SweepTable

    recalls = {0: (0.5, 0.9), 1: (0.7, 0.6), 2: (0.6, 0.75)}
    for fold, (bal, recall_b) in recalls.items():
        folder = tmp_path / f"{fold}_fold-{fold}"
        (folder / ".hydra").mkdir(parents=True)
        config = {"loss": {}, "trainer": {"monitor": "val/balanced_acc", "monitor_mode": "max"}}
        (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"dataset.fold={fold}"]))
        (folder / "metrics.csv").write_text(
            "epoch,val_balanced_acc,val_macro_f1,val_acc_few\n"
            f"1,{bal - 0.1},0.1,0.0\n2,{bal},{bal - 0.05},{recall_b}\n"
        )
        (folder / "per_class.csv").write_text(
            f"epoch,model,class,recall\n2,val,a,{bal}\n2,val,b,{recall_b}\n2,val_ema,b,0.0\n1,val,b,0.0\n"
        )
    jobs, _ = summarise(tmp_path, {"dataset.fold"})
    numbers = summary(jobs)
    bals = [b for b, _ in recalls.values()]
    assert numbers["val_balanced_acc"]["mean"] == pytest.approx(statistics.fmean(bals))
    assert numbers["val_balanced_acc"]["sd"] == pytest.approx(statistics.stdev(bals))
    assert numbers["recall b"]["mean"] == pytest.approx(statistics.fmean(r for _, r in recalls.values()))
    assert numbers["val_macro_f1"]["folds"] == 3
    # the end of the sweep: the folds are one experiment, no fold is "best"
    ended = {"hydra": {"sweep": {"dir": str(tmp_path)}, "sweeper": {"params": {"dataset.fold": "0,1,2"}}}}
    with caplog.at_level(logging.INFO):
        SweepTable().on_multirun_end(OmegaConf.create(ended))
    assert "Over the folds" in caplog.text and "Best:" not in caplog.text and "<- best" not in caplog.text
    assert {row["is_best"] for row in csv.DictReader((tmp_path / "sweep_results.csv").open())} == {"0"}
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert (
        "Over the folds" in page
        and f"{statistics.fmean(bals):.4f} ± " in page
        and 'class="bad">best<' not in page
    )


def test_split_settings_are_checked_before_any_data_is_read(tmp_path):
    nowhere = [*TREE, f"dataset.root={tmp_path / 'nowhere'}"]
    for given, words in [
        (["dataset.val_fraction=1.5"], "must lie between 0 and 1"),
        (["dataset.folds=5", "dataset.fold=5"], "fold one of 0 to folds - 1"),
        (["dataset.folds=5", "dataset.val_fraction=0.2"], "set one of them"),
    ]:
        with pytest.raises(UserError, match=words):
            train(compose_config([*nowhere, *given]), Path(tmp_path / "run"))


def test_a_fold_sweeps_summary_is_the_mean_and_sd_of_the_folds_metrics_json(tmp_path):
    """Three folds trained as a sweep's jobs; the summary recomputed from each fold's metrics.json."""
    import yaml
    from omegaconf import OmegaConf

    tree = make_tree(tmp_path / "tree", {"a": (12, 0), "b": (9, 0), "c": (6, 0)})
    sweep = tmp_path / "sweep"
    for fold in range(3):
        overrides = [f"dataset.fold={fold}"]
        cfg = compose_config(
            [*TREE, f"dataset.root={tree}", "dataset.folds=3", *overrides, "trainer.epochs=2"]
        )
        job = sweep / f"{fold}_fold-{fold}"
        train(cfg, job)
        (job / ".hydra").mkdir()  # what Hydra writes for a sweep's job
        (job / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    jobs, _ = summarise(sweep, {"dataset.fold"})
    numbers = summary(jobs)
    valid = [json.loads((sweep / f"{f}_fold-{f}" / "metrics.json").read_text())["valid"] for f in range(3)]
    for name, key in (("val_balanced_acc", "balanced_acc"), ("val_macro_f1", "macro_f1")):
        values = [v[key] for v in valid]
        assert numbers[name]["mean"] == pytest.approx(statistics.fmean(values), abs=1e-5)
        assert numbers[name]["sd"] == pytest.approx(statistics.stdev(values), abs=1e-5)
    recalls = [v["per_class"]["c"] for v in valid]
    assert numbers["recall c"]["mean"] == pytest.approx(statistics.fmean(recalls), abs=1e-5)


def test_evaluate_and_predict_refuse_a_carved_split_that_moved_naming_the_images(tmp_path):
    tree = make_tree(tmp_path / "tree", {"a": (12, 0), "b": (8, 0)})
    settings = [*TREE, f"dataset.root={tree}", "dataset.val_fraction=0.25", "dataset.val_dir=nowhere"]
    run = tmp_path / "run"
    train(compose_config(settings), run)
    last = str(run / "checkpoints" / "last.pt")
    assert evaluate({"checkpoint": last, "device": "cpu", "output_dir": str(tmp_path / "e0")})["images"] == 5
    rng = np.random.default_rng(3)
    for i in range(6):  # images added since: the same fraction now carves other images
        write_image(tree / "train" / "a" / f"added{i}.png", rng)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match=r"not the ones the run validated on \(it recorded 5 images") as err:
        evaluate({"checkpoint": last, "device": "cpu", "output_dir": str(tmp_path / "e1")})
    assert "validate now that did not (e.g. a/" in str(err.value) and "added" in str(err.value)
    with pytest.raises(UserError, match="not the ones the run validated on"):
        predict({"checkpoint": last, "split": "valid", "output": str(tmp_path / "p.csv"), "device": "cpu"})
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing of the run changed
    # another split asked for on purpose is evaluated as asked
    other = {"checkpoint": last, "device": "cpu", "output_dir": str(tmp_path / "e2")}
    assert evaluate(other | {"dataset": {"split_seed": 1}})["images"] > 5


def test_a_class_without_validation_images_is_not_validated_rather_than_scored_0(tmp_path, caplog):
    """A class of one image stays in training under val_fraction: it has no recall, so the means
    leave it out (scikit-learn's balanced_accuracy_score does), and every view marks it."""
    from sklearn.metrics import balanced_accuracy_score

    tree = make_tree(tmp_path / "tree", {"a": (8, 0), "b": (6, 0), "c": (1, 0)})
    settings = [*TREE, f"dataset.root={tree}", "dataset.val_fraction=0.4", "dataset.val_dir=nowhere"]
    run = tmp_path / "run"
    caplog.set_level("INFO")
    summary_ = train(compose_config([*settings, "trainer.few_shot=10", "trainer.report=true"]), run)
    res = summary_.final["val"]
    matrix = np.asarray(res.confusion_matrix)
    truth = np.repeat(np.arange(3), matrix.sum(1))
    predicted = np.concatenate([np.repeat(np.arange(3), row) for row in matrix])
    assert res.acc_per_class[2] is None and matrix[2].sum() == 0
    assert res.balanced_acc == pytest.approx(balanced_accuracy_score(truth, predicted), abs=1e-6)
    assert res.acc_few == pytest.approx((res.acc_per_class[0] + res.acc_per_class[1]) / 2)  # c left out
    assert caplog.text.count("No validation image for class(es) c") == 1
    rows = list(csv.DictReader((run / "per_class.csv").open()))
    assert {r["recall"] for r in rows if r["class"] == "c"} == {""}  # not validated, not 0
    assert json.loads((run / "metrics.json").read_text())["valid"]["per_class"]["c"] is None
    assert "not validated (no validation images; left out of the recall means): c" in caplog.text
    assert "<td >not validated</td>" in (run / "report.html").read_text(encoding="utf-8")
