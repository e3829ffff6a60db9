"""Natural mistakes never destroy a run, and a user's slip is one message, never a traceback:
a new run over a finished one, archive litter, changed data or settings on resume, damaged
checkpoints, edge-size batches and images, unset variables, signals and closed pipes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
import torch
from conftest import ATTO, ROOT, SHRINK, compose_config, make_tree, write_image
from helpers.runs import wait_until_it_catches
from omegaconf import OmegaConf

from common.errors import UserError
from data.loaders import ImageData
from data.settings import ImageFolderSettings
from train import train
from trainer.build import check_optimizer_and_scheduler
from trainer.evaluation.figures import confusion_image
from trainer.evaluation.reports import class_report, tidy
from trainer.shell.launch import exits_cleanly
from trainer.shell.rundir import KEPT_BY_HYDRA, check_run_dir
from trainer.shell.settings import run_config

sys.path.insert(0, str(ROOT / "scripts"))
from evaluate import evaluate
from export import export
from predict import predict

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
TREE = ["dataset=imagefolder", "dataset.batch_size=4"]
CLASSES = {"=sum": (8, 3), "b": (6, 3), "c": (4, 3)}  # a class name a spreadsheet would run


def command(*args: str, script: str = "train.py") -> list[str]:
    flags = [a for a in args if a.startswith("-")]
    shrink = SHRINK if script == "train.py" else []
    return [sys.executable, str(ROOT / script), *flags, *shrink, *(a for a in args if a not in flags)]


def run_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)


def digests(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) by relative path, with its SHA-256."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tree and a finished one-epoch run on it, trained in this process (copy before changing)."""
    tmp = tmp_path_factory.mktemp("mistakes")
    tree = make_tree(tmp / "tree", CLASSES)
    train(compose_config([*TREE, f"dataset.root={tree}"]), tmp / "run")
    return tree, tmp / "run"


def test_a_new_run_in_a_finished_runs_directory_is_refused_and_overwrite_moves_it_aside(finished, tmp_path):
    tree, done = finished
    run = tmp_path / "run"
    shutil.copytree(done, run)
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("the earlier run's config\n")
    before = digests(run)
    out = run_train(*TREE, f"dataset.root={tree}", f"hydra.run.dir={run}")
    assert out.returncode == 2, out.stderr[-2000:]
    said = out.stdout + out.stderr
    assert f"The run directory {run} already holds a run (checkpoints/last.pt)" in said
    assert "add resume=auto" in said and "add overwrite=true" in said and "Traceback" not in said
    assert digests(run) == before  # not a byte changed, Hydra's own files included

    out = run_train(*TREE, f"dataset.root={tree}", f"hydra.run.dir={run}", "overwrite=true")
    assert out.returncode == 0, out.stderr[-2000:]
    [aside] = tmp_path.glob("run.replaced-*")
    assert digests(aside) == before  # the earlier run, whole, beside the new one
    assert f"was moved to {aside}" in out.stdout + out.stderr
    assert (run / "checkpoints" / "last.pt").is_file() and (run / ".hydra" / "overrides.yaml").is_file()


def test_a_sweep_job_over_an_earlier_trial_is_refused_or_moved_aside_keeping_hydras_files(finished, tmp_path):
    job = tmp_path / "0_loss-ce"
    shutil.copytree(finished[1], job)
    earlier = digests(job)
    (job / ".hydra").mkdir()
    (job / ".hydra" / "config.yaml").write_text("this launch's\n")
    with pytest.raises(UserError, match="already holds a run"):
        check_run_dir(job, None, False, keep=KEPT_BY_HYDRA)
    check_run_dir(job, "auto", False, keep=KEPT_BY_HYDRA)  # continuing it is what resume is for
    check_run_dir(job, None, True, keep=KEPT_BY_HYDRA)
    [aside] = tmp_path.glob("0_loss-ce.replaced-*")
    assert digests(aside) == earlier
    assert {p.name for p in job.iterdir()} - {".lock"} == {".hydra"}


def test_archive_litter_is_never_an_image_or_a_class(tmp_path, caplog):
    tree = make_tree(tmp_path / "tree", {"a": (4, 2), "b": (3, 2)})
    for split in ("train", "valid"):
        litter = tree / split / "__MACOSX" / "a"
        litter.mkdir(parents=True)
        (litter / "._000.png").write_bytes(b"\0\5\26\7AppleDouble")
        (tree / split / "a" / "._000.png").write_bytes(b"\0\5\26\7AppleDouble")
        (tree / split / "a" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (tree / split / "b" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
        write_image(tree / split / "b" / ".thumbnails" / "000.png", __import__("numpy").random.default_rng(0))
    caplog.set_level("INFO")
    data = ImageData(ImageFolderSettings(root=str(tree), image_size=32, num_workers=0))
    assert data.class_names == ["a", "b"] and data.train_dataset.classes == ["a", "b"]
    assert data.class_counts == [4, 3] and len(data.train_dataset) == 7 and len(data.val_dataset) == 4
    assert (
        "5 hidden or system file(s) and folder(s) ignored" in caplog.text
    )  # per split: 2 in a, 2 in b, __MACOSX
    assert "not images were ignored" not in caplog.text


def test_a_resume_on_changed_data_or_with_another_loss_is_refused_unless_accepted(finished, tmp_path):
    tree, run = tmp_path / "tree", tmp_path / "run"
    shutil.copytree(finished[0], tree)  # moved data: the root may change, the images may not
    shutil.copytree(finished[1], run)
    stale = run / "checkpoints" / ".last.pt.k2j4f.tmp"
    stale.write_bytes(b"half a checkpoint")
    common = [*TREE, f"dataset.root={tree}", "trainer.epochs=2", "resume=auto"]
    added = [tree / "train" / "b" / f"new{i}.png" for i in range(2)]
    for path in added:
        shutil.copy(tree / "train" / "b" / "000.png", path)
    before = digests(run)
    with pytest.raises(UserError) as err:
        train(compose_config(common), run)
    assert "training images per class, checkpoint -> now" in str(err.value) and "b 6 -> 8" in str(err.value)
    assert "resume_accept_changes=true" in str(err.value)
    assert not stale.exists()  # the killed save's temporary file, removed once the run was locked
    assert digests(run) == {k: v for k, v in before.items() if k != str(stale.relative_to(run))}
    for path in added:
        path.unlink()

    with pytest.raises(UserError, match=r"loss._target_ 'losses.CrossEntropyLoss' -> 'losses.FocalLoss'"):
        train(compose_config([*common, "loss=focal"]), run)
    train(compose_config([*common, "loss=focal", "resume_accept_changes=true"]), run)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["config"]["loss"]["_target_"] == "losses.FocalLoss"
    assert state["config"]["dataset"]["root"] == str(tree)


@pytest.mark.parametrize("fault", ["nan", "reshaped", "unexpected"])
def test_a_checkpoint_with_nan_or_mismatched_weights_is_refused_by_every_script(finished, tmp_path, fault):
    state = torch.load(finished[1] / "checkpoints" / "best.pt", weights_only=True)
    if fault == "nan":
        state["model"]["stem.0.weight"][0, 0, 0, 0] = float("nan")
        words = r"hold NaN or infinite values in 1 tensor\(s\) \(e.g. \['stem.0.weight'\]\)"
    elif fault == "reshaped":
        state["model"]["head.fc.weight"] = torch.zeros(5, state["model"]["head.fc.weight"].shape[1])
        words = r"do not fit the model it records .* 1 of another shape \(e.g. \['head.fc.weight'\]\)"
    else:
        state["model"]["extra.weight"] = torch.zeros(1)
        words = r"1 unexpected \(e.g. \['extra.weight'\]\)"
    damaged = tmp_path / "damaged.pt"
    torch.save(state, damaged)
    for script, args in (
        (evaluate, {"output_dir": str(tmp_path / "eval")}),
        (predict, {"input": str(finished[0] / "valid"), "output": str(tmp_path / "p.csv")}),
        (export, {"format": "onnx", "output": str(tmp_path / "model.onnx")}),
    ):
        with pytest.raises(UserError, match=words):
            script({"checkpoint": str(damaged), **args})
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "eval" / "metrics.json").exists()
    assert (
        json.dumps(tidy({"loss": float("nan"), "acc": [float("inf"), 0.5]}))
        == '{"loss": null, "acc": [null, 0.5]}'
    )


def test_a_last_batch_of_one_image_is_dropped_so_batchnorm_trains(tmp_path, caplog):
    tree = make_tree(tmp_path / "tree", {"a": (5, 2), "b": (4, 2)})  # 9 images at batch 4: 4, 4 and 1
    caplog.set_level("INFO")
    cfg = compose_config([*TREE, f"dataset.root={tree}", "model.name=resnet10t", "trainer.ema.enabled=false"])
    train(cfg, tmp_path / "run")
    assert "The last training batch of each epoch would hold one image (9 images" in caplog.text
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["num_updates"] == 2


@pytest.mark.parametrize(
    ("override", "words"),
    [
        (
            f"dataset.image_size=16 {ATTO}",
            r"dataset.image_size=16 is too small for model.name='convnextv2_atto' \(",
        ),
        (f"dataset.image_size=16 {ATTO}", "the smallest size it takes is 32, and it was made for 224 px"),
        ("model.name=resnet10t dataset.batch_size=1", "dataset.batch_size=1 with model.name='resnet10t'"),
        ("seed=-5", "seed=-5 must be an integer from 0 to 2\\*\\*32 - 1"),
        ("seed=1099511627776", "seed=1099511627776 must be an integer from 0"),
        ("optimizer.lr=inf", "optimizer.lr=inf must be a positive number"),
        ("dataset.max_image_pixels=0", "dataset.max_image_pixels=0 must be a positive number of pixels"),
        (
            "model.checkpoint_path=WEIGHTS.csv",
            r"model.checkpoint_path='.*WEIGHTS.csv' cannot be read as weights",
        ),
        (
            "model.checkpoint_path=WEIGHTS.pth",
            r"model.checkpoint_path='.*WEIGHTS.pth' cannot be read as weights",
        ),
    ],
)
def test_sizes_seeds_rates_and_weights_files_are_refused_before_data_is_read(tmp_path, override, words):
    (tmp_path / "WEIGHTS.csv").write_text("path,label\na.png,1\n")
    (tmp_path / "WEIGHTS.pth").write_bytes(bytes(range(256)) * 20)
    override = override.replace("WEIGHTS", str(tmp_path / "WEIGHTS"))
    nowhere = ["dataset=imagefolder", f"dataset.root={tmp_path / 'nowhere'}"]  # a scan would fail first
    with pytest.raises(UserError, match=words) as err:
        train(compose_config([*nowhere, *override.split()]), tmp_path / "run")
    assert "weights_only" not in str(err.value)


def test_an_unset_variable_and_a_run_directory_that_is_a_file_are_one_line(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("a file where the run should go")
    for args, words in (
        (
            ["optimizer.lr=${oc.env:NO_SUCH_VARIABLE_SET}", f"hydra.run.dir={tmp_path / 'run'}"],
            'optimizer.lr: KeyError raised while resolving interpolation: "Environment variable '
            "'NO_SUCH_VARIABLE_SET' not found\"",
        ),
        ([f"hydra.run.dir={taken}"], f"hydra.run.dir='{taken}' is a file, not a folder"),
        (["-m", f"hydra.sweep.dir={taken}"], f"hydra.sweep.dir='{taken}' is a file, not a folder"),
    ):
        out = run_train(*args)
        said = out.stdout + out.stderr
        assert out.returncode == 2, said[-2000:]
        assert words in said and "Traceback" not in said and len(said.strip().splitlines()) <= 2, said
    assert not (tmp_path / "run").exists() and taken.read_text() == "a file where the run should go"


def png_header(width: int, height: int) -> bytes:
    """A valid PNG that declares ``width`` x ``height`` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def test_a_decompression_bomb_is_skipped_and_counted_everywhere(finished, tmp_path, caplog):
    tree = tmp_path / "tree"
    shutil.copytree(finished[0], tree)
    (tree / "train" / "b" / "bomb.png").write_bytes(png_header(20_000, 20_000))  # 400 million pixels
    (tree / "valid" / "b" / "bomb.png").write_bytes(png_header(20_000, 20_000))
    data = ImageData(ImageFolderSettings(root=str(tree), image_size=32, num_workers=0, batch_size=4))
    loader = data.val_loader()
    assert sum(len(target) for _, target in loader) == 9 and not loader.skipped  # left out at the scan
    assert not [p for p, _ in data.train_dataset.samples if Path(p).name == "bomb.png"]  # nor counted
    assert "20000 x 20000 = 400,000,000 pixels, over dataset.max_image_pixels=178956970" in caplog.text
    rows = predict(
        {
            "checkpoint": str(finished[1] / "checkpoints" / "best.pt"),
            "input": str(tree / "valid" / "b"),
            "output": str(tmp_path / "p.csv"),
        }
    )
    assert len(rows) == 3  # the bomb skipped, the three images classified


def test_a_file_the_run_may_not_write_is_one_line_and_exit_2(tmp_path, caplog):
    blocked = tmp_path / "metrics.csv"
    with pytest.raises(SystemExit) as stopped, exits_cleanly(tmp_path, []):
        raise PermissionError(13, "Permission denied", str(blocked))
    assert stopped.value.code == 2
    assert f"Could not write {blocked} (Permission denied). Fix its permissions" in caplog.text


def wait_for(path: Path, proc: subprocess.Popen, limit: float = 300) -> None:
    deadline = time.time() + limit
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)


@pytest.mark.slow
def test_sighup_saves_and_says_how_to_continue_like_sigterm(tmp_path):
    tree = make_tree(tmp_path / "tree", {"a": (60, 3), "b": (40, 3), "c": (20, 3)})
    run = tmp_path / "run"
    args = command(*TREE, f"dataset.root={tree}", "trainer.epochs=3", f"hydra.run.dir={run}")
    proc = subprocess.Popen(
        args, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    wait_for(run / "checkpoints" / "last.pt", proc)
    proc.send_signal(signal.SIGHUP)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGHUP, out[-3000:]
    assert "stopped by SIGHUP: checkpoints/last.pt holds epoch 2" in out and "To continue: python" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("delay", [0.0, 4.0])
def test_ctrl_c_at_any_moment_of_train_or_predict_is_one_line_and_exit_130(finished, tmp_path, delay):
    """Ctrl-C as soon as the program has started (its first import installed the handlers; the
    libraries, numpy and torch, are loading), while the data is read, or mid-work."""
    tree, run = finished
    launches = [
        command(*TREE, f"dataset.root={tree}", f"hydra.run.dir={tmp_path / 'run'}"),
        command(
            f"checkpoint={run / 'checkpoints' / 'best.pt'}",
            f"input={tree}",
            f"output={tmp_path / 'p.csv'}",
            script="scripts/predict.py",
        ),
    ]
    for args in launches:
        proc = subprocess.Popen(
            args, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        # started: its first import installed its handlers (Python catches SIGINT from the start, so
        # SIGHUP, which only the program catches, says so); a Ctrl-C while Python itself starts up
        # (its site module) is Python's, not the program's
        wait_until_it_catches(proc, signal.SIGHUP)
        time.sleep(delay)
        if proc.poll() is not None:
            continue  # finished before the Ctrl-C: nothing to check at this delay
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=300)
        assert "Traceback" not in out and "Error" not in out, out[-3000:]
        if "classified into" in out or "Best val/balanced_acc" in out:
            continue  # the work was done and written before the Ctrl-C, which then only ends it
        assert proc.returncode == 130, out[-3000:]
        assert not (tmp_path / "p.csv").exists()  # no half-written output


def test_a_closed_stdout_is_left_quietly_and_the_log_file_keeps_everything(finished, tmp_path):
    tree, _ = finished
    run = tmp_path / "run"
    args = command(*TREE, f"dataset.root={tree}", f"hydra.run.dir={run}")
    proc = subprocess.Popen(
        args, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first = proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0 and "Run directory" in first
    assert "Logging error" not in err and "BrokenPipe" not in err, err[-3000:]
    assert "Best val/balanced_acc" in (run / "train.log").read_text()


def test_layer_decay_is_not_said_to_have_no_effect_because_of_the_settings_probe(caplog):
    cfg = compose_config(["optimizer.layer_decay=0.75"])
    check_optimizer_and_scheduler(cfg.optimizer, cfg.scheduler, 2)
    assert "no effect" not in caplog.text


def test_dataset_root_expands_home_and_is_recorded_absolute(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ImageFolderSettings(root="~/tree").prepare_root() == tmp_path / "tree"
    monkeypatch.chdir(tmp_path)
    cfg = compose_config(["dataset=imagefolder", "dataset.root=tree"])
    settings = OmegaConf.to_object(cfg.dataset)
    assert run_config(cfg, settings)["dataset"]["root"] == str(tmp_path / "tree")


def test_long_class_names_are_shortened_for_display_only():
    names = ["a" * 250, "a" * 200 + "b" * 50, "short"]
    report = class_report([[3, 1, 0], [0, 2, 0], [0, 0, 1]], names)
    assert max(len(line) for line in report.splitlines()) < 100
    assert f"{'a' * 19}…{'a' * 20}" in report and f"{'a' * 19}…{'b' * 20}" in report  # still told apart
    assert confusion_image([[3, 1, 0], [0, 2, 0], [0, 0, 1]], names).width < 800


def test_predict_never_writes_a_cell_a_spreadsheet_would_run(finished, tmp_path):
    tree, run = finished
    output = tmp_path / "p.csv"
    predict(
        {
            "checkpoint": str(run / "checkpoints" / "best.pt"),
            "input": str(tree / "valid"),
            "output": str(output),
        }
    )
    cells = [cell for line in output.read_text(encoding="utf-8").splitlines() for cell in line.split(",")]
    assert "'=sum" in cells and not any(cell.startswith(("=", "+", "-", "@")) for cell in cells)
