"""The model's output is its logits: softmax of it is a probability, for LDAM as for CE, and
temperature scaling (evaluate.py calibrate=true) makes it an honest one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from conftest import ATTO, ROOT

from train import train
from trainer.evaluation.calibration import calibrate, fit_temperature

sys.path.insert(0, str(ROOT / "scripts"))
from evaluate import evaluate
from export import export
from predict import predict

RUN = ["trainer.epochs=3", "trainer.ema.enabled=false", "optimizer.lr=2e-3", ATTO]


def test_fit_temperature_recovers_the_scale_of_overconfident_logits():
    g = torch.Generator().manual_seed(0)
    calibrated = torch.randn(2000, 5, generator=g) * 2
    target = torch.distributions.Categorical(logits=calibrated).sample()  # labels drawn from softmax
    assert fit_temperature(3.0 * calibrated, target) == pytest.approx(3.0, rel=0.1)
    report = calibrate(3.0 * calibrated, target, fitted_on="test")
    assert report["ece_after"] < report["ece_before"] and report["nll_after"] < report["nll_before"]
    with pytest.raises(ValueError, match="too few"):
        calibrate(calibrated[:10], target[:10], fitted_on="test")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    from conftest import compose_config

    digits = tmp_path_factory.mktemp("digits")
    out = {}
    for loss in ("ldam", "ce"):
        run = tmp_path_factory.mktemp(loss)
        summary = train(compose_config([f"loss={loss}", f"dataset.root={digits}", *RUN]), run)
        out[loss] = {"run": run, "val": summary.final["val"]}
    return out


def test_ldam_outputs_are_logits_whose_softmax_is_a_probability(runs, tmp_path, capsys):
    ldam, ce = runs["ldam"], runs["ce"]
    assert abs(ldam["val"].acc - ce["val"].acc) < 0.1  # runs of similar accuracy
    ckpt = ldam["run"] / "checkpoints" / "last.pt"
    raw = evaluate({"checkpoint": str(ckpt), "output_dir": str(tmp_path / "raw")})
    assert raw["loss"] == pytest.approx(ldam["val"].loss, rel=1e-4)  # the run's val/loss, the same scale
    # Unscaled cosines made every class look alike (top-1 "probabilities" near 1/C). Now the model
    # is confident, over-confident as margin-trained models are, and ECE says by how much.
    rows = predict({"checkpoint": str(ckpt), "input": raw["data"], "output": str(tmp_path / "raw.csv")})
    confidence = sum(float(r["probability"]) for r in rows) / len(rows)
    assert confidence > raw["acc"] and raw["ece"] == pytest.approx(confidence - raw["acc"], abs=0.05)

    fitted = evaluate({"checkpoint": str(ckpt), "output_dir": str(tmp_path / "fit"), "calibrate": "true"})
    report = fitted["calibration"]
    said = capsys.readouterr().out
    assert f"(was 1), fitted on {report['images']} images of " in said
    assert f"stored in {ckpt}, which was rewritten whole" in said and "measured on them" in said
    assert fitted["output_dir"] == str(tmp_path / "fit")
    assert report["temperature"] > 1.5 and fitted["temperature"] == report["temperature"]
    assert report["ece_after"] < report["ece_before"] / 2
    # calibrated, LDAM's validation NLL is in the neighbourhood of cross-entropy's
    assert fitted["loss"] == pytest.approx(ce["val"].loss, rel=0.25)
    assert fitted["acc"] == raw["acc"]  # a temperature changes no prediction
    rows = predict({"checkpoint": str(ckpt), "input": raw["data"], "output": str(tmp_path / "fit.csv")})
    confidence = sum(float(r["probability"]) for r in rows) / len(rows)
    assert confidence == pytest.approx(raw["acc"], abs=0.1)

    info = export({"checkpoint": str(ckpt), "format": "torchscript", "output": str(tmp_path / "m.pt")})
    assert info["temperature"] == report["temperature"]
    stored = torch.load(ckpt, weights_only=True)
    assert stored["calibration"]["model"]["temperature"] == report["temperature"]
    assert "ema" not in stored["calibration"]  # fitted for the raw weights only


def test_cross_entropy_needs_little_temperature(runs, tmp_path):
    ckpt = Path(runs["ce"]["run"]) / "checkpoints" / "last.pt"
    fitted = evaluate({"checkpoint": str(ckpt), "output_dir": str(tmp_path), "calibrate": "true"})
    assert 0.7 < fitted["temperature"] < 1.4
