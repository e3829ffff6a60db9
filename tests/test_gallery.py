"""The error gallery: the most confident mistakes per true class, drawn during training (files and
TensorBoard) and by evaluate.py."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, compose_config
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from train import train
from trainer.evaluation.gallery import Predictions, confident_mistakes, gallery_rows

sys.path.insert(0, str(ROOT / "scripts"))
from evaluate import evaluate


def test_the_most_confident_wrong_predictions_are_picked_per_true_class():
    rng = np.random.default_rng(0)
    n, classes = 300, 5
    targets = rng.integers(0, classes, n)
    logits = torch.tensor(rng.normal(size=(n, classes)) * 2)
    predictions = Predictions(n, torch.device("cpu"))
    order = rng.permutation(n)  # batches arrive in any order: indices place them
    for batch in np.array_split(order, 7):
        predictions.add(torch.tensor(batch), logits[batch])
    prob, pred, seen = predictions.synced()
    probs = logits.softmax(1)
    assert np.allclose(prob, probs.max(1).values.numpy()) and (pred == probs.argmax(1).numpy()).all()
    picks = confident_mistakes(targets, pred, prob, seen, per_class=4)
    for label in range(classes):  # checked against a plain sort of the wrong ones
        wrong = [i for i in range(n) if targets[i] == label and pred[i] != label]
        assert picks[label] == sorted(wrong, key=lambda i: -prob[i])[:4]
    rows = gallery_rows(targets, pred, prob, seen, [f"c{i}" for i in range(classes)], rows=3)
    recalls = [np.mean(pred[targets == c] == c) for c in range(classes)]
    assert [r.name for r in rows] == [f"c{c}" for c in np.argsort(recalls, kind="stable")[:3]]
    assert rows[0].recall == pytest.approx(min(recalls)) and rows[0].missed == sum(
        (targets == int(rows[0].name[1:])) & (pred != targets)
    )


def test_a_run_draws_its_gallery_at_the_chosen_epochs_and_evaluate_draws_one(tmp_path, digits_cache):
    run = tmp_path / "run"
    cfg = compose_config([f"dataset.root={digits_cache}", "trainer.epochs=3", "trainer.gallery_every=2",
                          "trainer.ema.enabled=false", "logger=[tensorboard]"])  # fmt: skip
    train(cfg, run)
    assert sorted(p.name for p in (run / "galleries").iterdir()) == ["val_epoch002.png", "val_epoch003.png"]
    picture = Image.open(run / "galleries" / "val_epoch003.png")
    assert picture.width > 600 and picture.height > 100
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert [e.step for e in events.Images("val_details/errors")] == [2, 3]
    report = evaluate({"checkpoint": str(run / "checkpoints" / "last.pt"), "device": "cpu"})
    assert Image.open(f"{report['output_dir']}/errors.png").width > 600
