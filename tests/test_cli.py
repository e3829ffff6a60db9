"""The command line as users type it: overrides, --cfg job, multirun, and error messages."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, SHRINK
from helpers.runs import run_train


def test_cfg_job_prints_the_composed_config():
    out = run_train("--cfg", "job", "loss=ldam", "optimizer.lr=1e-4", "trainer.epochs=30")
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    assert cfg["loss"]["_target_"] == "losses.LDAMLoss"
    assert cfg["optimizer"]["lr"] == 1e-4 and cfg["trainer"]["epochs"] == 30
    assert cfg["model"]["head"] == "auto"  # resolved to cosine for LDAM when the run starts (logged)


def test_multirun_puts_each_job_in_its_own_directory(image_tree, tmp_path):
    sweep = tmp_path / "sweep"
    out = run_train(
        "-m",
        *SHRINK,
        "dataset=imagefolder",
        f"dataset.root={image_tree}",
        "dataset.batch_size=4",
        "loss=ce,focal",
        f"hydra.sweep.dir={sweep}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for job, loss in (("0_loss-ce", "ce"), ("1_loss-focal", "focal")):  # named by what the jobs vary
        assert (sweep / job / "checkpoints" / "last.pt").is_file()
        assert (sweep / job / "metrics.csv").is_file()
        overrides = yaml.safe_load((sweep / job / ".hydra" / "overrides.yaml").read_text())
        assert f"loss={loss}" in overrides


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["dataset.foo=1"], "Could not override 'dataset.foo'"),
        (["trainer.epochs=abc"], "could not be converted to Integer"),
        (["loss=hinge"], "Could not find 'loss/hinge'"),
    ],
)
def test_unknown_keys_and_wrong_types_get_hydras_message(args, words, tmp_path):
    out = run_train(*args, f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode != 0
    assert words in out.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_user_mistake_is_one_message_not_a_traceback(tmp_path):
    out = run_train(
        "dataset=imagefolder", f"dataset.root={tmp_path / 'photos'}", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert out.returncode == 2
    assert "dataset.root=" in out.stderr + out.stdout and "is not a folder" in out.stderr + out.stdout
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()  # a refused run leaves no run directory behind


def test_resume_auto_without_a_run_dir_is_warned_about(tmp_path):
    out = run_train("resume=auto", "dataset=imagefolder", f"dataset.root={tmp_path / 'photos'}", cwd=tmp_path)
    assert out.returncode == 2
    assert "resume=auto looks for checkpoints/last.pt" in out.stderr + out.stdout
    assert "hydra.run.dir=DIR" in out.stderr + out.stdout
    assert not [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()]  # nothing left of the run


def test_the_users_command_trains_ldam_with_mixup_on_the_digits(digits_cache, tmp_path):
    run = tmp_path / "run"
    out = run_train(
        "loss=ldam",
        "model=convnextv2",
        "mixup=default",
        "optimizer.lr=1e-3",
        "trainer.epochs=1",
        "trainer.progress=false",
        f"dataset.root={digits_cache}",
        f"hydra.run.dir={run}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    log = (run / "train.log").read_text()
    assert "loss LDAMLoss" in log and "epoch 1/1" in log
    assert (run / "checkpoints" / "best.pt").is_file()
    epoch_line = next(line for line in log.splitlines() if " - epoch 1/1 " in line)
    assert len(epoch_line.split(" - ", 1)[1]) <= 150 and epoch_line.endswith("| best")
    shown = next(line for line in out.stdout.splitlines() if " epoch 1/1 " in line)  # the console
    assert re.fullmatch(r"\d\d:\d\d:\d\d epoch 1/1 train loss .*\| best", shown) and len(shown) <= 159
    # the end: the best epoch's table with scikit-learn's per-class report, no float32 noise
    assert "Best val/balanced_acc = 0." in log and "precision    recall  f1-score   support" in log
    numbers = re.sub(r"Config, resolved.*?\n\[", "[", log, flags=re.S)  # the config keeps 4/3 whole
    assert not re.search(r"\d\.\d{9,}", numbers)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["optimizer.lr=-1"], "optimizer.lr=-1 must be a positive number"),
        (["dataset=imagefolder", "dataset.root=/photos", "dataset.mean=[0.5]"], "dataset.mean=[0.5] must be"),
        (["trainer.ema.decay=2"], "trainer.ema.decay=2.0 must lie in (0, 1)"),
        (["mixup=default", "mixup.mode=foo"], "mixup.mode='foo' is not one of"),
    ],
)
def test_a_settings_mistake_is_refused_before_torch_is_imported(tmp_path, args, words):
    out = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            str(ROOT / "train.py"),
            *args,
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and words in out.stdout
    imported = {
        line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")
    }
    assert "hydra" in imported  # the import log is read
    assert not {"torch", "timm", "torchvision", "tensorboard", "matplotlib", "torchmetrics"} & imported


def test_train_help_describes_the_app_and_every_group_as_it_is():
    out = run_train("--help")
    assert out.returncode == 0 and out.stdout.startswith("train.py: train an image classifier")
    assert "schema" not in out.stdout and "powered by Hydra" not in out.stdout
    listed = {}
    for line in out.stdout.split("Groups, chosen as group=option")[1].split("\n\n")[0].splitlines()[1:]:
        group, options = line.split(maxsplit=1)
        listed[group] = {o.strip() for o in options.split("(")[0].split("|")}
    configs = ROOT / "configs"
    on_disk: dict[str, set[str]] = {}
    for file in configs.glob("*/**/*.yaml"):  # groups, nested ones too (hydra/launcher)
        on_disk.setdefault(file.parent.relative_to(configs).as_posix(), set()).add(file.stem)
    assert listed == on_disk  # the hand-written list has not drifted from configs/
