"""evaluate / predict / export on a run trained here, and the real TensorBoard server reading it."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, compose_config, make_tree, write_image
from evaluate import evaluate
from export import export
from omegaconf import OmegaConf
from predict import predict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

from common.errors import UserError
from train import train

CLASSES = {"a b": (9, 3), "ünï": (5, 3), "zed": (4, 2)}  # spaces and non-ASCII letters in class names


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs on a small tree with a non-image file; best.pt chosen by the EMA's balanced accuracy."""
    tmp = tmp_path_factory.mktemp("scripts")
    tree = make_tree(tmp / "tree", CLASSES)
    (tree / "valid" / "zed" / "readme.txt").write_text("not an image")
    overrides = [
        "dataset=imagefolder",
        f"dataset.root={tree}",
        "dataset.batch_size=4",
        "trainer.epochs=2",
        "trainer.monitor=val_ema/balanced_acc",
        "trainer.ema.decay=0.9",
    ]
    train(compose_config(overrides), tmp / "run", overrides=overrides)
    return tmp / "run"


def test_evaluate_reproduces_best_metric_and_writes_reports(run, tmp_path):
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    out = tmp_path / "eval"
    report = evaluate(
        {
            "checkpoint": str(run / "checkpoints" / "best.pt"),
            "output_dir": str(out),
            "ema": "true",
            "tta": "none",
            "device": "cpu",
        }
    )
    assert report["balanced_acc"] == best["best_metric"]  # exactly: same weights, data and code
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert set(saved) >= {"acc", "balanced_acc", "macro_f1", "per_class", "confusion_matrix"}
    assert saved["balanced_acc"] == pytest.approx(report["balanced_acc"], rel=1e-5)
    assert not re.search(r"\d\.\d{9,}", (out / "metrics.json").read_text())  # no float32 noise
    assert list(saved["per_class"]) == sorted(CLASSES)  # folder order
    assert sum(map(sum, saved["confusion_matrix"])) == 8  # every validation image once, readme.txt ignored
    assert (out / "confusion_matrix.png").stat().st_size > 1000


def test_evaluate_raw_last_matches_metrics_csv_and_flip_tta_runs(run, tmp_path, capsys):
    last_row = list(csv.DictReader((run / "metrics.csv").open()))[-1]
    settings = {"checkpoint": str(run / "checkpoints" / "last.pt"), "tta": "none", "device": "cpu"}
    report = evaluate(settings)
    said = capsys.readouterr().out
    last = run / "checkpoints" / "last.pt"
    assert said.startswith(f"Evaluating {last}: epoch 2 of 2, best val_ema/balanced_acc")
    assert "raw weights, no post-hoc adjustment, T 1 (not calibrated), no TTA; data: " in said
    assert "valid, 8 images of 3 classes" in said
    assert report["output_dir"] == str(run / "evaluations" / "last-epoch2")  # named by what was evaluated
    assert report["acc"] == pytest.approx(float(last_row["val_acc"]), abs=1e-5)
    with pytest.raises(UserError, match="already holds the results of an evaluation .* overwrite=true"):
        evaluate(settings)  # never replaced silently
    assert evaluate(settings | {"overwrite": "true"})["acc"] == report["acc"]
    flipped = evaluate(settings | {"tta": "flip"})
    assert flipped["output_dir"].endswith("last-epoch2-flip")
    assert flipped["tta"] == "flip" and flipped["loss"] != pytest.approx(
        report["loss"]
    )  # mirrors averaged in
    matrix = flipped["confusion_matrix"]
    assert flipped["acc"] == pytest.approx(
        sum(matrix[i][i] for i in range(len(matrix))) / sum(map(sum, matrix))
    )
    assert "trained without flips" not in capsys.readouterr().err  # it trained with flips
    state = torch.load(last, weights_only=True)
    state["config"]["dataset"]["hflip"] = 0.0  # as a run on digits, where a mirrored 2 is no 2
    torch.save(state, tmp_path / "unflipped.pt")
    evaluate(settings | {"checkpoint": str(tmp_path / "unflipped.pt"), "tta": "flip"})
    assert "warning: tta=flip averages each image with its mirror, but this model was trained without " in (
        capsys.readouterr().err
    )


def test_evaluate_cli_on_another_folder_and_its_errors(run, tmp_path):
    other = make_tree(tmp_path / "other", {name: (0, 2) for name in CLASSES}, seed=5)
    flat = other / "valid"
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "evaluate.py"),
        f"checkpoint={run}/checkpoints/last.pt",
        f"output_dir={tmp_path / 'out'}",
        f"dataset.root={flat}",
        "dataset.train_dir=.",
        "dataset.val_dir=.",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "balanced acc" in out.stdout and "ünï" in out.stdout
    assert sum(map(sum, json.loads((tmp_path / "out" / "metrics.json").read_text())["confusion_matrix"])) == 6
    bad = subprocess.run([*cmd[:2], "checkpoint=/nope.pt"], capture_output=True, text=True)
    assert (
        bad.returncode == 2
        and "checkpoint='/nope.pt' is not a file" in bad.stderr
        and "Traceback" not in bad.stderr
    )
    predict_py = str(ROOT / "scripts" / "predict.py")
    topk = subprocess.run(
        [sys.executable, predict_py, f"checkpoint={run}/checkpoints/last.pt", f"input={flat}", "topk=two"],
        capture_output=True,
        text=True,
    )
    # wrong types and unknown keys get Hydra's own message
    assert (
        topk.returncode != 0 and "Value 'two' of type 'str' could not be converted to Integer" in topk.stderr
    )
    assert "Traceback" not in topk.stderr
    typo = subprocess.run([*cmd, "emma=true"], capture_output=True, text=True)
    assert typo.returncode != 0 and "Key 'emma' not in 'EvaluateSettings'" in typo.stderr
    missing = subprocess.run([*cmd[:2]], capture_output=True, text=True)
    assert missing.returncode == 2 and "evaluate: give checkpoint=..." in missing.stderr


def test_compare_losses_help_lists_its_keys_and_methods(tmp_path):
    path = str(ROOT / "scripts" / "compare_losses.py")
    shown = subprocess.run([sys.executable, path, "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert shown.returncode == 0 and "seeds=3" in shown.stdout and "ldam_drw" in shown.stdout
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("script", "keys", "setting"),
    [
        ("evaluate", ["checkpoint: ???", "tta: none", "calibrate: false", "root: null"], "ema=true"),
        ("predict", ["checkpoint: ???", "output: ''", "cam: false"], "ema=true"),
        ("export", ["format: ???", "opset: 18", "logit_adjust: 0.0"], "ema=true"),
        ("prepare_rafdb", ["src: ???", "dst: ???"], "src=a"),
        ("benchmark", ["measure=step|runs|reporting", "steps: 30", "amp_dtype: none"], "compile=true"),
        ("tools/reference_loop", ["root: ???", "validate: end", "tau: 0.0"], "root=a"),
    ],
)
def test_every_script_is_a_hydra_app_with_help(script, keys, setting, tmp_path):
    path = str(ROOT / "scripts" / f"{script}.py")
    shown = subprocess.run([sys.executable, path, "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"scripts/{script}.py") and "??? marks a required one" in shown.stdout
    for key in keys:
        assert key in shown.stdout, key
    composed = subprocess.run(
        [sys.executable, path, "--cfg", "job", setting], capture_output=True, text=True, cwd=tmp_path
    )
    assert composed.returncode == 0 and setting.replace("=", ": ") in composed.stdout, composed.stderr
    assert not list(tmp_path.iterdir())  # no run directory, no .hydra


@pytest.mark.parametrize(
    ("script", "args", "words"),
    [
        (evaluate, {"device": "gpu"}, "device='gpu' is not one of: auto, cpu, cuda"),
        (evaluate, {"output_dir": "/proc/nope"}, "output_dir='/proc/nope': the folder '/proc/nope'"),
        (evaluate, {"dataset.image_size": "abc"}, "dataset.image_size: Value 'abc'"),
        (predict, {"input": "/nope"}, "input='/nope' is neither an image file nor a folder"),
        (predict, {"output": "/proc/a/b.csv"}, "output='/proc/a/b.csv': the folder '/proc/a' cannot be"),
        (predict, {"ema": "maybe"}, "ema: Value 'maybe' is not a valid bool"),
        (predict, {"emma": "true"}, "emma: Key 'emma' not in 'PredictSettings'"),
        (export, {"format": "onnx", "opset": "x"}, "opset: Value 'x' of type 'str' could not be converted"),
        (export, {"format": "onnx", "opset": "0"}, "opset=0 must be a positive integer"),
        (export, {"format": "onnx", "opset": "99"}, "opset=99 is newer than this onnx package knows"),
    ],
)
def test_every_script_key_names_a_wrong_value(run, tmp_path, script, args, words):
    defaults = {"checkpoint": str(run / "checkpoints" / "best.pt")}
    defaults |= {"input": str(tmp_path)} if script is predict else {}
    defaults |= {"output": str(tmp_path / "model.onnx")} if script is export else {}
    with pytest.raises(UserError) as refused:
        script(defaults | args)
    assert words in str(refused.value)
    assert not [p for p in tmp_path.iterdir()]  # no output, not even a partial one


def test_predict_writes_a_row_per_readable_image(run, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    rng = np.random.default_rng(3)
    for name in ("one.png", "sub/two.jpg", "sub/three.png"):
        write_image(inputs / name, rng)
    (inputs / "broken.png").write_text("not an image")
    (inputs / "notes.txt").write_text("not an image either")
    output = tmp_path / "predictions.csv"
    rows = predict(
        {
            "checkpoint": str(run / "checkpoints" / "best.pt"),
            "input": str(inputs),
            "output": str(output),
            "topk": "2",
            "ema": "false",
            "batch_size": "2",
            "device": "cpu",
        }
    )
    assert len(rows) == 3
    saved = list(csv.DictReader(output.open(encoding="utf-8")))
    assert [Path(r["path"]).name for r in saved] == ["one.png", "three.png", "two.jpg"]
    for r in saved:
        assert r["prediction"] == r["top1"] and r["prediction"] in CLASSES
        assert float(r["top1_probability"]) >= float(r["top2_probability"])
    capsys.readouterr()
    single = predict(
        {
            "checkpoint": str(run / "checkpoints" / "best.pt"),
            "input": str(inputs / "one.png"),
            "topk": "1",
            "ema": "true",
            "batch_size": "8",
            "device": "cpu",
        }
    )
    assert len(single) == 1
    said, default = capsys.readouterr().out, run / "predictions" / "one.csv"  # by default in the run
    assert f"one.png: {single[0]['prediction']} (probability {float(single[0]['probability']):.3f})" in said
    assert f"1 image(s) classified into {default}" in said and default.is_file()
    # nothing to classify is said, exit status 2, and no header-only file is left
    (tmp_path / "empty").mkdir()
    for given, said in ((tmp_path / "empty", "holds no file"), (inputs / "notes.txt", "is a readable image")):
        with pytest.raises(UserError, match=said):
            predict({"checkpoint": str(run / "checkpoints" / "best.pt"), "input": str(given),
                     "output": str(tmp_path / "none.csv"), "device": "cpu"})  # fmt: skip
        assert not (tmp_path / "none.csv").exists()


def test_predict_on_a_labelled_tree_is_an_error_list_with_evaluate_s_recalls(run, tmp_path):
    best = str(run / "checkpoints" / "best.pt")
    tree = run.parent / "tree"
    rows = predict({"checkpoint": best, "input": str(tree / "valid"), "output": str(tmp_path / "p.csv"),
                    "device": "cpu"})  # fmt: skip
    assert all(r["true"] == Path(r["path"]).parent.name for r in rows)
    assert all(r["correct"] == str(int(r["true"] == r["prediction"])) for r in rows)
    summary = {r["class"]: r for r in csv.DictReader((tmp_path / "p_summary.csv").open(encoding="utf-8"))}
    report = evaluate({"checkpoint": best, "output_dir": str(tmp_path / "ev"), "device": "cpu"})
    for name, recall in report["per_class"].items():
        assert float(summary[name]["recall"]) == pytest.approx(recall, abs=1e-4)
        assert int(summary[name]["images"]) == sum(r["true"] == name for r in rows)
    same = predict({"checkpoint": best, "split": "valid", "output": str(tmp_path / "s.csv"), "device": "cpu"})
    assert sorted((r["path"], r["true"], r["prediction"]) for r in same) == sorted(
        (r["path"], r["true"], r["prediction"]) for r in rows
    )
    with pytest.raises(UserError, match="split=test: the run has no test split"):
        predict({"checkpoint": best, "split": "test", "output": str(tmp_path / "t.csv"), "device": "cpu"})


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch(run, tmp_path, fmt):
    path = tmp_path / f"model.{fmt}"
    info = export(
        {
            "checkpoint": str(run / "checkpoints" / "best.pt"),
            "format": fmt,
            "output": str(path),
            "ema": "false",
            "opset": "18",
        }
    )
    assert path.is_file() and info["max_abs_difference_from_pytorch"] <= 1e-4
    sidecar = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
    assert sidecar["class_names"] == sorted(CLASSES) and sidecar["image_size"] == 32
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert sidecar["checkpoint"] == str((run / "checkpoints" / "best.pt").resolve())  # which weights
    assert (sidecar["epoch"], sidecar["weights"], sidecar["best_metric"]) == (
        best["epoch"],
        "model",
        best["best_metric"],
    )
    if fmt == "onnx":  # a batch size other than the export sample's works too
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert session.run(None, {"images": np.zeros((7, 3, 32, 32), np.float32)})[0].shape == (7, 3)


def test_tensorboard_holds_scalars_confusion_matrices_and_hparams(run):
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in (
        "val/balanced_acc",
        "val/macro_f1",
        "val_details/ece",
        "val_ema_details/best_balanced_acc",  # the best so far of trainer.monitor
        "val_per_class/a b",  # per-class curves in a section of their own
        "val_per_class/ünï",
        "val_ema_per_class/zed",
    ):
        assert tag in tags["scalars"], tag
    assert not any("hparam" in tag or "acc_per_class" in tag for tag in tags["scalars"])
    assert {"val_details/confusion_matrix", "val_ema_details/confusion_matrix"} <= set(tags["images"])
    # the HParams tab, read back with TensorBoard's own parsers: every setting, no experiment record
    content = acc.PluginTagToContent("hparams")
    assert hparams_metadata.EXPERIMENT_TAG not in content
    session = hparams_metadata.parse_session_start_info_plugin_data(
        content[hparams_metadata.SESSION_START_INFO_TAG]
    )
    assert session.hparams["loss"].string_value == "CrossEntropyLoss"  # in-process: no group option
    assert session.hparams["optimizer.lr"].number_value > 0 and "seed" in session.hparams
    assert not [k for k in session.hparams if k.endswith("_target_") or k.startswith(("resume", "split."))]
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    running = acc.Scalars("val_ema_details/best_balanced_acc")  # the best so far: its last is the best
    assert running[-1].value == pytest.approx(best["best_metric"]) and len(running) == 2
    assert not (run / "tensorboard" / "best").exists()  # no sub-run doubling the run list
    [best_card] = acc.Tensors("run/best_epoch/text_summary")  # the Text tab: the end table, the settings
    text = best_card.tensor_proto.string_val[0].decode()
    assert f"at epoch {best['epoch']} (best.pt)" in text and "zed" in text and best_card.step == best["epoch"]
    [settings_card] = acc.Tensors("run/settings/text_summary")
    assert "Config, resolved:" in settings_card.tensor_proto.string_val[0].decode()
    [layout] = acc.Tensors("custom_scalars__config__")  # charts titled with their classes and counts
    assert b"val recall: a b (9), \xc3\xbcn\xc3\xaf (5), zed (4)" in layout.tensor_proto.string_val[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_tensorboard_server_serves_the_run(run):
    port = free_port()
    tensorboard = Path(sys.executable).parent / "tensorboard"
    server = subprocess.Popen(
        [str(tensorboard), "--logdir", str(run), "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        tags, deadline = {}, time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5
                ) as r:
                    tags = json.loads(r.read())
                if tags:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        run_tags = tags.get("tensorboard", {})
        for tag in ("z_train/loss", "val_details/acc", "val/balanced_acc", "val_ema/loss"):
            assert tag in run_tags, (tag, list(tags))
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_post_hoc_logit_adjustment_in_evaluate_predict_and_export(run, tmp_path):
    last = str(run / "checkpoints" / "last.pt")
    counts = torch.load(last, weights_only=True)["class_counts"]
    log_prior = np.log(np.array(counts) / sum(counts))
    # evaluate: the adjusted balanced accuracy validation logged for the same weights
    report = evaluate(
        {"checkpoint": last, "output_dir": str(tmp_path / "e"), "ema": "false", "tta": "none"}
        | {"logit_adjust": "1.0", "device": "cpu"}
    )
    logged = read_csv_rows(run / "metrics.csv")[-1]
    assert report["logit_adjust"] == 1.0
    assert report["balanced_acc"] == pytest.approx(float(logged["val_balanced_acc_adjusted"]), abs=1e-5)
    # the training counts (9, 5, 4) are all few-shot: many and medium are absent, not 0
    assert report["acc_many"] is None and report["acc_medium"] is None and report["acc_few"] is not None
    assert logged["val_acc_many"] == "" and logged["val_acc_few"] != ""

    # predict: softmax(z - log prior) is the unadjusted probability divided by the prior, renormalised
    inputs = tmp_path / "inputs"
    for name in ("a.png", "b.png", "c.png"):
        write_image(inputs / name, np.random.default_rng(len(name) + ord(name[0])))

    def probabilities(tau: str) -> dict[str, dict[str, float]]:
        args = {"checkpoint": last, "input": str(inputs), "output": str(tmp_path / f"{tau}.csv")}
        rows = predict(
            args | {"topk": "3", "ema": "false", "logit_adjust": tau, "batch_size": "2", "device": "cpu"}
        )
        return {r["path"]: {r[f"top{k}"]: float(r[f"top{k}_probability"]) for k in (1, 2, 3)} for r in rows}

    plain, adjusted = probabilities("0"), probabilities("1.0")
    names = sorted(CLASSES)
    for path, p in plain.items():
        expected = np.array([p[n] for n in names]) / np.exp(log_prior)
        expected /= expected.sum()
        assert [adjusted[path][n] for n in names] == pytest.approx(expected.tolist(), abs=1e-5)

    # export: the adjustment baked into the file shifts every logit by -log prior
    outputs = {}
    for tau in ("0", "1.0"):
        path = tmp_path / f"model_{tau}.pt"
        info = export(
            {"checkpoint": last, "format": "torchscript", "output": str(path), "ema": "false"}
            | {"logit_adjust": tau, "opset": "18"}
        )
        assert info["logit_adjust"] == float(tau)
        outputs[tau] = torch.jit.load(str(path))(torch.zeros(2, 3, 32, 32)).detach().numpy()
    assert outputs["1.0"] - outputs["0"] == pytest.approx(np.tile(-log_prior, (2, 1)), abs=1e-5)
    with pytest.raises(UserError, match="logit_adjust=-1.0 must be"):
        evaluate(
            {"checkpoint": last, "output_dir": "", "ema": "false", "tta": "none"}
            | {"logit_adjust": "-1", "device": "cpu"}
        )


def test_tau_normalisation_in_evaluate_predict_and_export(run, tmp_path):
    from data.images import load_rgb
    from data.transforms import build_transform
    from models.factory import classifier_names, model_from_checkpoint
    from models.heads import tau_normalise

    from lib.runs import dataset_settings

    last = str(run / "checkpoints" / "last.pt")
    state = torch.load(last, weights_only=True)
    model = model_from_checkpoint(state, ema=False)
    names = classifier_names(model)
    head = model.get_submodule(names[0])
    weight, bias = head.weight.detach().clone(), head.bias.detach().clone()
    tau_normalise(model, names, 0.0)
    assert torch.equal(head.weight, weight) and torch.equal(head.bias, bias)  # tau 0: the identity
    norms = weight.norm(dim=1)
    assert norms.max() / norms.min() > 1.001  # trained on 9, 5, 4 images: the norms differ
    tau_normalise(model, names, 1.0)
    assert head.weight.detach().norm(dim=1).tolist() == pytest.approx([1.0] * len(norms), abs=1e-6)  # equal
    assert head.bias.detach().tolist() == pytest.approx((bias / norms).tolist(), abs=1e-6)

    inputs = tmp_path / "inputs"
    for name in ("a.png", "b.png"):
        write_image(inputs / name, np.random.default_rng(ord(name[0])))
    rows = predict({"checkpoint": last, "input": str(inputs), "output": str(tmp_path / "p.csv"), "topk": "3",
                    "tau_norm": "1", "device": "cpu"})  # fmt: skip
    path = tmp_path / "model.pt"
    info = export({"checkpoint": last, "format": "torchscript", "output": str(path), "tau_norm": "1"})
    assert info["tau_norm"] == 1.0 and info["temperature"] == 1.0
    transform = build_transform(OmegaConf.to_object(dataset_settings(state, {})), is_training=False)
    exported = torch.jit.load(str(path))
    for row in rows:  # the file computes what predict.py reports
        image = transform(load_rgb(row["path"], target_size=32))[None]
        probs = exported(image).detach().softmax(dim=1)[0].tolist()
        assert {state["class_names"][i]: p for i, p in enumerate(probs)} == pytest.approx(
            {row[f"top{k}"]: float(row[f"top{k}_probability"]) for k in (1, 2, 3)}, abs=1e-5
        )
    report = evaluate({"checkpoint": last, "tau_norm": "1", "device": "cpu"})
    assert report["tau_norm"] == 1.0 and "taunorm1" in report["output_dir"]
    with pytest.raises(UserError, match=r"tau_norm=1000 turns the classifier's rows .*into infinities"):
        evaluate({"checkpoint": last, "tau_norm": "1000", "device": "cpu"})  # not a NaN loss and a score
    with pytest.raises(UserError, match="tau_norm=-1.0 must be a number >= 0"):
        predict({"checkpoint": last, "input": str(inputs), "tau_norm": "-1", "device": "cpu"})


def test_benchmark_measures_are_chosen_and_typed_by_hydra(tmp_path):
    path = str(ROOT / "scripts" / "benchmark.py")

    def bench(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, path, *args], capture_output=True, text=True, cwd=tmp_path)

    ran = bench("measure=reporting", "classes=40", "epochs=2")
    assert ran.returncode == 0, ran.stderr
    assert "| 40 |" in ran.stdout and re.search(r"\| ratio \| \d+\.\d\d \|", ran.stdout)
    no_tree = bench("measure=runs")
    assert no_tree.returncode == 2 and "benchmark: give data_root=..." in no_tree.stderr
    wrong = bench("measure=runs", "classes=5")  # a key of another measure
    assert wrong.returncode != 0 and "Key 'classes' not in 'RunsSettings'" in wrong.stderr
    assert not list(tmp_path.iterdir())  # no run directory, no .hydra/


def test_compare_losses_types_its_own_keys_and_passes_the_rest_to_train():
    from compare_losses import parse_args

    plan = parse_args(
        ["seeds=2", "folds=3", "methods=ce,crt", "output_dir=/tmp/x", "trainer.epochs=1", "+extra=[1,2]"]
    )
    assert (plan.seeds, plan.folds, plan.methods, str(plan.out)) == (2, 3, ["ce", "crt"], "/tmp/x")
    assert plan.overrides == ["trainer.epochs=1", "+extra=[1,2]"]
    assert plan.runs(5) == [(5, 0), (5, 1), (5, 2), (6, 0), (6, 1), (6, 2)]
    for bad, message in [
        ("seeds=two", "seeds: Value 'two'"),
        ("seeds=0", "must be at least 1"),
        ("folds=1", "must be 0 (the data's own split) or at least 2"),
        ("folds=3", "plain_loop reads a training and a validation folder"),
        ("methods=ce,nope", "unknown ['nope']"),
        ("epochs", "each setting is key=value"),
    ]:
        with pytest.raises(UserError, match=re.escape(message)):
            parse_args([bad])


def test_compare_losses_runs_methods_over_folds(tmp_path):
    from compare_losses import main

    tree = make_tree(tmp_path / "tree", {"a": (10, 0), "b": (6, 0), "c": (4, 0)})
    own = ["seeds=1", "folds=2", "methods=ce,ce_posthoc", f"output_dir={tmp_path / 'out'}"]
    data = ["dataset=imagefolder", f"dataset.root={tree}", "dataset.batch_size=4", "dataset.image_size=32"]
    report = main([*own, *data, "trainer.ema.enabled=false", "trainer.epochs=1", "trainer.device=cpu"])
    assert {"ce_f0_s0", "ce_f1_s0", "ce_posthoc_f0_s0", "ce_posthoc_f1_s0"} <= {
        p.name for p in (tmp_path / "out").iterdir()
    }
    splits = [(tmp_path / "out" / f"ce_f{f}_s0" / "split.csv").read_text() for f in (0, 1)]
    validated = [{row for row in text.splitlines() if row.endswith(",valid")} for text in splits]
    assert len(validated[0]) == 10 and not validated[0] & validated[1]  # the two folds' halves
    assert report.count(" ± ") >= 2  # mean ± sd over the two folds


def test_compare_losses_runs_methods_over_seeds_and_judges_noise(tmp_path, capsys):
    from compare_losses import main, table

    tree = make_tree(tmp_path / "tree", {"a": (10, 3), "b": (5, 3), "c": (3, 3)})
    own = ["seeds=2", "methods=ce_posthoc,crt,plain_loop", f"output_dir={tmp_path / 'out'}"]
    data = ["dataset=imagefolder", f"dataset.root={tree}", "dataset.batch_size=4", "dataset.image_size=32"]
    report = main([*own, *data, "trainer.ema.enabled=false", "trainer.epochs=1", "trainer.device=cpu"])
    rows = [line for line in report.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[0] for r in rows] == ["| ce_posthoc", "| crt", "| plain_loop"]  # ce ran, unlisted
    assert {f"{m}_s{s}" for m in ("ce", "ce_posthoc", "crt") for s in (0, 1)} <= {
        p.name for p in (tmp_path / "out").iterdir()
    }
    assert " ± " in rows[0] and "best" in report
    # the verdicts: two standard errors of the difference decide
    same = {"balanced_acc": 0.80, "macro_f1": 0.8, "acc_few": None}
    runs = {
        "a": [same, same | {"balanced_acc": 0.82}],
        "b": [same | {"balanced_acc": 0.79}, same | {"balanced_acc": 0.81}],
        "c": [same | {"balanced_acc": 0.50}, same | {"balanced_acc": 0.51}],
    }
    timed = table(runs, 2, {"a": [10.0, 12.0], "b": [30.0, 30.0], "c": [1.0, 2.0]})
    verdicts = [line.split(" | ")[-2:] for line in timed.splitlines()[2:]]
    assert verdicts == [["best", "11 |"], ["within noise", "30 |"], ["worse", "2 |"]]  # and the mean seconds
    assert "| - |" in table(runs, 2)  # no few-shot class: absent, not 0


def test_compare_losses_trains_each_second_stage_on_its_own_first_stage(tmp_path, caplog):
    """MiSLAS's and weight balancing's second stages, each on its own first stage, as their papers do."""
    from compare_losses import main

    tree = make_tree(tmp_path / "tree", {"a": (10, 3), "b": (5, 3), "c": (3, 3)})
    own = ["seeds=1", "methods=mislas,wb", f"output_dir={tmp_path / 'out'}"]
    data = ["dataset=imagefolder", f"dataset.root={tree}", "dataset.batch_size=4", "dataset.image_size=32"]
    with caplog.at_level(logging.INFO):
        report = main([*own, *data, "trainer.ema.enabled=false", "trainer.epochs=1", "trainer.report=false"])
    assert [line.split(" | ")[0] for line in report.splitlines()[2:]] == ["| mislas", "| wb"]
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {"ce_mixup_s0", "ce_s0", "mislas_s0", "wb_s0"}

    def last(run: str) -> dict:
        return torch.load(out / run / "checkpoints" / "last.pt", weights_only=True)

    mixed, mislas = last("ce_mixup_s0"), last("mislas_s0")
    assert mixed["config"]["mixup"] and not mislas["config"]["mixup"]
    assert mislas["config"]["model"]["checkpoint_path"] == str(
        out / "ce_mixup_s0" / "checkpoints" / "last.pt"
    )
    for name, tensor in mixed["model"].items():
        assert torch.equal(tensor, mislas["model"][name]), name  # backbone and classifier: frozen
    scales = mislas["model"]["head.fc.class_scale"]
    assert scales.shape == (3,) and not torch.equal(scales, torch.ones(3))  # LWS: only the scales learned
    assert len(mislas["optimizer"]["state"]) == 1
    assert "has no BatchNorm layer, so there are no statistics to shift" in caplog.text

    first, wb = last("ce_s0")["model"], last("wb_s0")["model"]
    rows = first["head.fc.weight"].norm(dim=1)
    cap = rows.min() + 0.1 * (rows.max() - rows.min())  # the authors' threshold 0.1, from stage 1's rows
    assert f"capped at norm {cap:.4g}" in caplog.text
    assert wb["head.fc.weight"].norm(dim=1).max() <= cap + 1e-5
    assert not torch.equal(wb["head.fc.weight"], first["head.fc.weight"])  # fine-tuned, not re-initialised
    assert all(torch.equal(t, wb[n]) for n, t in first.items() if not n.startswith("head.fc."))
