"""The error gallery (the most confident mistakes per true class, drawn during training and by
evaluate.py) and class-activation maps (where the model looks)."""

from __future__ import annotations

import sys
from pathlib import Path

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
from predict import predict


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
    summary = train(cfg, run)
    drawn = sorted(p.name for p in (run / "galleries").iterdir())
    assert drawn == ["val_best.png", "val_epoch002.png", "val_epoch003.png"]  # and best.pt's, at the end
    picture = Image.open(run / "galleries" / "val_epoch003.png")
    assert picture.width > 600 and picture.height > 100
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert [e.step for e in events.Images("val_details/errors")] == [2, 3]
    assert [e.step for e in events.Images("val_details/errors_of_best_pt")] == [summary.best_epoch]
    report = evaluate({"checkpoint": str(run / "checkpoints" / "last.pt"), "device": "cpu"})
    plain = Image.open(f"{report['output_dir']}/errors.png")
    assert plain.width > 600
    painted = evaluate({"checkpoint": str(run / "checkpoints" / "last.pt"), "device": "cpu", "cam": "true",
                        "output_dir": str(tmp_path / "cam")})  # fmt: skip
    overlaid = Image.open(f"{painted['output_dir']}/errors.png")
    # the same rows of mistakes (the heading names the maps: a line longer), the thumbnails painted
    assert overlaid.width == plain.width and 0 <= overlaid.height - plain.height <= 40

    def coloured(picture: Image.Image) -> float:  # the digits are grey: colour in the thumbnails is heat
        pixels = np.asarray(picture.convert("RGB"), dtype=int)[:, 190:]
        return float(((pixels.max(axis=2) - pixels.min(axis=2)) > 60).mean())

    assert coloured(plain) == 0 and coloured(overlaid) > 0.05


SIDE = 28  # the square's side, in pixels of a 120 x 96 image: the model sees 96 x 96, a 3 x 3 map


def square_image(
    path: Path, rng: np.random.Generator, corner: tuple[int, int] | None, size=(120, 96)
) -> None:
    """Grey noise, and a bright square at ``corner`` (x, y) if given: the only signal."""
    pixels = rng.normal(110, 25, (size[1], size[0], 3)).clip(0, 255)
    if corner is not None:
        x, y = corner
        pixels[y : y + SIDE, x : x + SIDE] = 250
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


@pytest.mark.slow
def test_a_class_activation_map_lights_the_square_that_defines_the_class(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 90), ("valid", 10)):
        for i in range(n):
            corner = (
                int(rng.integers(12, 108 - SIDE)),
                int(rng.integers(0, 96 - SIDE)),
            )  # in the centre crop
            square_image(tmp_path / "tree" / split / "square" / f"{i}.png", rng, corner)
            square_image(tmp_path / "tree" / split / "plain" / f"{i}.png", rng, None)
    run = tmp_path / "run"
    settings = ["dataset=imagefolder", f"dataset.root={tmp_path / 'tree'}", "dataset.image_size=96",
                "dataset.scale=[0.9,1.0]", "dataset.hflip=0.0", "dataset.color_jitter=0.0",
                "trainer.epochs=6", "trainer.ema.enabled=false", "optimizer.lr=2e-3",
                "dataset.batch_size=16"]  # fmt: skip
    summary = train(compose_config(settings), run)
    assert summary.best_metric > 0.9  # it found the square
    corners = [(20, 4), (60, 60), (40, 30)]  # where training put squares: x 12 to 79, y 0 to 67
    for i, corner in enumerate(corners):
        square_image(tmp_path / "new" / f"{i}.png", rng, corner)
    rows = predict({"checkpoint": str(run / "checkpoints" / "best.pt"), "input": str(tmp_path / "new"),
                    "output": str(tmp_path / "out" / "p.csv"), "cam": "true", "device": "cpu"})  # fmt: skip
    for row, corner in zip(rows, corners, strict=True):
        assert row["prediction"] == "square"
        original, painted = Image.open(tmp_path / "new" / Path(row["path"]).name), Image.open(row["cam"])
        assert original.size == (120, 96) and painted.size == (160, 128)  # enlarged to 128 px, to be seen
        painted = painted.resize(original.size, Image.NEAREST)
        change = np.abs(np.asarray(painted, float) - np.asarray(original, float)).sum(
            axis=2
        )  # the heat's colour
        inside = np.zeros_like(change, dtype=bool)
        inside[corner[1] : corner[1] + SIDE, corner[0] : corner[0] + SIDE] = True
        assert change[inside].mean() > 2 * change[~inside].mean()  # the heat is on the square


def test_cam_picks_the_last_feature_stage_and_refuses_a_transformer(tmp_path):
    import timm

    from common.errors import UserError
    from trainer.evaluation.cam import ClassActivationMaps

    resnet = ClassActivationMaps(timm.create_model("resnet18", num_classes=3).eval(), 224, "resnet18")
    assert resnet.layer is resnet.model.layer4  # 7 x 7 at 224 px: the last stage
    small = ClassActivationMaps(resnet.model, 64, "resnet18")
    assert small.layer is resnet.model.layer3  # at 64 px layer4 is 2 x 2, layer3 4 x 4
    maps = resnet.maps(torch.randn(2, 3, 64, 64), torch.tensor([0, 2]))
    assert maps.shape == (2, 64, 64) and maps.max() <= 1.0
    vit = ClassActivationMaps(timm.create_model("test_vit", num_classes=3).eval(), 160, "test_vit")
    with pytest.raises(UserError, match="not a map"):
        vit.check(160, torch.device("cpu"))


def test_cam_reads_a_channels_last_stage_as_grad_cam_defines_it():
    import timm

    from trainer.evaluation.cam import ClassActivationMaps

    torch.manual_seed(0)
    model = timm.create_model("test_mambaout", num_classes=3).eval()  # stages give (N, H, W, C)
    cams = ClassActivationMaps(model, 64, "test_mambaout")
    cams.check(64, torch.device("cpu"))
    assert cams.nhwc and cams.cells == (4, 4) and "a 4 x 4 map" in cams.describe()
    images, classes = torch.randn(2, 3, 64, 64), torch.tensor([0, 2])
    got = cams.maps(images, classes)
    # by hand: the stage's channels weighed by their mean gradient of the class score, positive part
    kept: list[torch.Tensor] = []
    hook = cams.layer.register_forward_hook(lambda _m, _i, out: kept.append(out))
    scores = model(images)[torch.arange(2), classes].sum()
    hook.remove()
    stage = kept[0]  # (N, H, W, C)
    (grad,) = torch.autograd.grad(scores, stage)
    heat = (grad.mean(dim=(1, 2), keepdim=True) * stage).sum(dim=3).clamp_min(0)[:, None]
    heat = torch.nn.functional.interpolate(heat, size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    heat = heat / heat.flatten(1).max(dim=1).values.clamp_min(1e-12)[:, None, None]
    assert np.allclose(got, heat.detach().numpy(), atol=1e-4)


def test_a_huge_image_gets_an_overlay_of_bounded_size_and_its_own_shape():
    from trainer.evaluation.cam import OVERLAY_SIDE, overlay

    huge = Image.new("RGB", (6000, 3000), (90, 120, 150))
    painted = overlay(huge, np.ones((32, 32), dtype=np.float32), crop_pct=1.0)
    assert painted.size == (OVERLAY_SIDE, OVERLAY_SIDE // 2)  # scaled down, its shape kept
    small = Image.new("RGB", (200, 150), (90, 120, 150))
    cold = np.zeros((32, 32), dtype=np.float32)
    assert overlay(small, cold).tobytes() == small.tobytes()  # no heat, no colour, its own size
    tiny = overlay(Image.new("RGB", (8, 12), (90, 120, 150)), cold)
    assert tiny.size == (128, 192)  # an 8-pixel image's overlay is enlarged to be seen
