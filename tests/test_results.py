"""Every number a run reports is declared once (trainer/results.py, the metric table): a metric
declared there and computed by Evaluation appears in every view of a run (the console line,
metrics.csv, TensorBoard, HParams, MLflow, the end table, report.html, metrics.json, evaluate.py's
metrics.json, the fold summary) and as a choice of trainer.monitor."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import compose_config, make_tree
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

from train import train
from trainer import results
from trainer.evaluation.metrics import Evaluation
from trainer.evaluation.reports import metrics_table
from trainer.results import TrainStats, csv_columns, monitorable

TREE = ["dataset=imagefolder", "dataset.batch_size=4"]


def test_the_g_mean_of_recalls_is_in_every_view_of_a_run(image_tree: Path, tmp_path, caplog):
    import json

    from evaluate import evaluate  # scripts/, on the path as conftest puts it
    from mlflow.tracking import MlflowClient

    from trainer.shell.folds import HEADLINE

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    loggers = ["logger=[tensorboard,csv,mlflow]", f"logger.mlflow.tracking_uri={store}"]
    run = tmp_path / "run"
    caplog.set_level("INFO")
    cfg = compose_config([*TREE, f"dataset.root={image_tree}", *loggers, "trainer.report=true"])
    summary = train(cfg, run)
    gmean = summary.final["val"].gmean
    assert gmean is not None and 0 <= gmean <= 1
    epoch_line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 1/1"))
    assert f"gm {100 * gmean:.1f}%" in epoch_line  # the console
    with (run / "metrics.csv").open(newline="") as f:
        [row] = list(csv.DictReader(f))
    assert float(row["val_gmean"]) == float(f"{gmean:.6g}") and row["val_ema_gmean"]  # metrics.csv
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert results.board_tag("val/gmean") in events.Tags()["scalars"]  # TensorBoard
    # HParams: the run's session; TensorBoard's metric columns are its scalars, the G-mean's among them
    assert hparams_metadata.SESSION_START_INFO_TAG in events.PluginTagToContent("hparams")
    client = MlflowClient(store)
    [found] = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert found.data.metrics["val/gmean"] == pytest.approx(gmean, abs=1e-6)  # MLflow
    table = caplog.text.split("Validation (val) at the best epoch")[1]
    assert "G-mean of recalls" in table  # the end table
    assert "G-mean of recalls" in (run / "report.html").read_text(encoding="utf-8")  # the report
    assert json.loads((run / "metrics.json").read_text())["valid"]["gmean"] == pytest.approx(gmean, abs=1e-5)
    checkpoint = str(run / "checkpoints" / "best.pt")
    report = evaluate({"checkpoint": checkpoint, "output_dir": str(tmp_path / "e"), "device": "cpu"})
    assert report["gmean"] is not None  # evaluate.py's metrics.json
    assert "val_gmean" in HEADLINE  # the fold summary's numbers


def test_a_metric_added_in_one_place_is_reported_everywhere(image_tree: Path, tmp_path, monkeypatch):
    monkeypatch.setattr(results, "VALIDATION", (*results.VALIDATION, "worst_class_acc"))
    worst = property(lambda self: min(self.acc_per_class))  # what the new metric computes
    monkeypatch.setattr(Evaluation, "worst_class_acc", worst, raising=False)
    run = tmp_path / "run"
    cfg = compose_config([*TREE, f"dataset.root={image_tree}", "trainer.monitor=val/worst_class_acc"])
    summary = train(cfg, run)

    with (run / "metrics.csv").open(newline="") as f:
        [row] = list(csv.DictReader(f))
    assert float(row["val_worst_class_acc"]) == min(summary.final["val"].acc_per_class)  # metrics.csv
    assert "val_ema_worst_class_acc" in row
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    tags = {results.board_tag(t) for t in ("val/worst_class_acc", "val_ema/worst_class_acc")}
    assert tags <= set(events.Tags()["scalars"])  # TensorBoard, in the section of details
    assert hparams_metadata.SESSION_START_INFO_TAG in events.PluginTagToContent("hparams")  # HParams
    assert (
        summary.monitor == "val/worst_class_acc"
        and summary.best_metric == summary.final["val"].worst_class_acc
    )
    assert "worst_class_acc" in metrics_table(summary.final["val"], summary.class_names)  # the end table


def test_the_names_make_the_tags_columns_and_choices():
    assert csv_columns(["val"])[:4] == ["epoch", "train_loss", "lr", "val_loss"]
    assert "val_balanced_acc_adjusted" in csv_columns(["val"]) and csv_columns(["val"])[-1] == "epoch_time"
    assert monitorable(ema=False) == [
        "train/loss",
        "val/loss",
        "val/acc",
        "val/balanced_acc",
        "val/macro_f1",
        "val/gmean",
        "val/ece",
    ]
    assert "val_ema/balanced_acc_adjusted" in monitorable(ema=True, posthoc=True)
    stats = TrainStats(loss=0.5, lr=1e-3, images_per_s=100.0, time=2.0, skipped=0)
    assert stats.scalars() == {"train/loss": 0.5, "train/lr": 1e-3, "train/images_per_s": 100.0}


def test_many_classes_are_summarised_where_they_would_not_be_read(tmp_path, caplog):
    counts = {f"class{i:02d}": (2, 1) for i in range(results.DETAIL_CLASSES + 10)}  # 40 classes
    tree = make_tree(tmp_path / "tree", counts)
    run = tmp_path / "run"
    caplog.set_level("INFO")
    cfg = compose_config(
        [*TREE, f"dataset.root={tree}", "trainer.ema.enabled=false", "dataset.image_size=32"]
    )
    train(cfg, run)
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    assert not [t for t in events.Tags()["scalars"] if "_per_class/" in t]  # no 40 unreadable curves
    assert events.Tags()["images"] == [
        "val_details/errors",
        "val_details/errors_of_best_pt",
    ]  # no confusion picture, the 8 worst classes' errors (the last epoch's and best.pt's)
    assert "val_details/top_confusions/text_summary" in events.Tags()["tensors"]
    with (run / "per_class.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40 and {r["class"] for r in rows} == set(counts)  # every class, in the file
    table = caplog.text.split("Validation (val) at the best epoch")[1]
    assert "the 10 lowest and 10 highest recalls of 40 classes" in table
    assert sum(name in table for name in counts) == 20
