"""Faults a run must survive: SIGTERM and Ctrl-C, a second process in its directory, a full disk."""

from __future__ import annotations

import hashlib
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SHRINK, make_tree
from helpers.readonly import read_only
from helpers.runs import TREE, assert_same_weights, overrides, run_train, scalar_tags, weights
from torch.optim.optimizer import register_optimizer_step_post_hook

from common.signals import Interrupted, StopSignals
from train import train
from trainer.checkpoint import save_checkpoint
from trainer.shell.runlock import RunLock

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def launch(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *SHRINK, *args],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # Hydra logs to stdout; tracebacks go to stderr: read both
        text=True,
        **kwargs,
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def signal_handlers():
    """Put the test process's own SIGTERM/SIGINT handlers back after a test installs ours."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """120 training images: 30 steps of 4 per epoch."""
    return make_tree(tmp_path / "tree", {"a": (60, 3), "b": (40, 3), "c": (20, 3)})


@pytest.mark.slow
def test_sigterm_checkpoints_and_the_printed_command_resumes_exactly(cfg_factory, tree, tmp_path):
    straight = tmp_path / "straight"
    train(cfg_factory(*overrides(tree)), straight)
    run = tmp_path / "run"
    proc = launch(*overrides(tree), f"hydra.run.dir={run}")
    deadline = time.time() + 300
    while not (run / "checkpoints" / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # into epoch 2, which trains while epoch 1's last.pt is written (an epoch: ~0.6 s)
    proc.send_signal(signal.SIGTERM)
    err, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err
    said = r"stopped by SIGTERM: checkpoints/last.pt holds epoch 2( up to step \d+ of 30|, complete)"
    assert re.search(said, err), err[-2000:]
    assert weights(run)["epoch"] < 4, "the run finished before the signal"

    command = shlex.split(err.split("To continue: ")[1].splitlines()[0])
    assert command[:2] == ["python", "train.py"] and command[-1] == "resume=auto"
    resumed = subprocess.run(
        [sys.executable, *command[1:]], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:] + resumed.stdout[-3000:]
    assert_same_weights(weights(straight), weights(run))


@pytest.mark.slow
def test_ctrl_c_at_an_epochs_last_step_resumes_exactly(cfg_factory, tree, tmp_path, signal_handlers):
    common = [*overrides(tree), "trainer.epochs=2"]
    straight = tmp_path / "straight"
    train(cfg_factory(*common), straight)

    steps = 0

    def press_ctrl_c(optimizer, args, kwargs):  # a real SIGINT, after the 30th and last step of epoch 1
        nonlocal steps
        steps += 1
        if steps == 30:
            os.kill(os.getpid(), signal.SIGINT)

    run = tmp_path / "run"
    hook = register_optimizer_step_post_hook(press_ctrl_c)
    try:
        with pytest.raises(Interrupted) as stopped:
            train(cfg_factory(*common), run, StopSignals().install())
    finally:
        hook.remove()
    assert stopped.value.exit_status == 130 and stopped.value.run_dir == run
    saved = weights(run)
    assert saved["epoch"] == 0 and saved["partial"]["step"] == 30
    train(cfg_factory(*common, "resume=auto"), run)
    assert_same_weights(weights(straight), weights(run))


class SecondSignal:
    """Pickled inside the checkpoint: sends a second SIGTERM in the middle of the save."""

    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):  # give the interpreter a point at which it runs the handler
            pass
        return (int, (0,))


def test_a_second_signal_during_a_save_stops_at_once_and_keeps_the_previous_checkpoint(
    tmp_path, signal_handlers
):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, path)
    before = digest(path)
    stop = StopSignals().install()
    with stop.deferred():
        os.kill(os.getpid(), signal.SIGTERM)  # the first: only noted
        assert stop.requested == signal.SIGTERM
        with pytest.raises(Interrupted):
            save_checkpoint({"epoch": 2, "w": torch.zeros(1000), "x": SecondSignal()}, path)
    assert digest(path) == before
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left


def test_a_signal_before_training_stops_at_once(signal_handlers):
    StopSignals().install()
    with pytest.raises(Interrupted) as stopped:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):
            pass
    assert stopped.value.exit_status == 143


@pytest.mark.slow
def test_a_second_process_in_a_run_directory_is_refused_until_the_first_dies(image_tree, tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from trainer.shell.runlock import RunLock; "
            "RunLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(600)",
            str(run),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        second = launch(*TREE, f"dataset.root={image_tree}", f"hydra.run.dir={run}", "resume=auto")
        err, _ = second.communicate(timeout=300)
        assert second.returncode == 2
        assert f"The run directory {run} is in use by process {holder.pid}" in err
        assert "Traceback" not in err
        assert (run / ".lock").is_file()  # the busy directory is not cleaned away as if empty
    finally:
        holder.kill()  # SIGKILL: the holder has no chance to clean up its lock
        holder.wait()
    third = launch(*TREE, f"dataset.root={image_tree}", f"hydra.run.dir={run}", "resume=auto")
    err, _ = third.communicate(timeout=600)
    assert third.returncode == 0, err[-3000:]
    assert (run / "checkpoints" / "last.pt").is_file()
    assert RunLock(run).try_acquire()  # released at exit


def limit_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_read_only_output_folder_is_one_line_naming_it_before_any_work(tmp_path):
    tree = make_tree(tmp_path / "tree", {"a": (6, 2), "b": (4, 2)})
    out = tmp_path / "out"
    args = [*SHRINK, *TREE, f"dataset.root={tree}"]
    again = ["trainer.epochs=2"]
    assert run_train(*args, f"hydra.run.dir={out / 'run'}").returncode == 0
    last = out / "run" / "checkpoints" / "last.pt"
    before = digest(last)
    command = [sys.executable, str(ROOT / "scripts" / "report.py")]

    def report(folder: Path) -> subprocess.CompletedProcess:
        return subprocess.run([*command, f"run={folder}"], capture_output=True, text=True)

    with read_only(out):
        refused = {
            "a new run": run_train(*args, f"hydra.run.dir={out / 'new'}"),
            "resume=auto": run_train(*args, f"hydra.run.dir={out / 'run'}", "resume=auto", *again),
            "resume=PATH": run_train(*args, f"resume={last}", f"hydra.run.dir={tmp_path / 'b'}", *again),
            "a sweep": run_train("-m", *args, f"hydra.sweep.dir={out / 'sweep'}", "seed=1,2"),
            "report.py": report(out / "run"),
            "report.py on a folder of runs": report(out),
        }
    for case, proc in refused.items():
        text = proc.stdout + proc.stderr
        assert proc.returncode == 2, (case, text[-3000:])
        assert f"{out}" in text and ("read-only file system" in text or "not writable" in text), case
        assert "Traceback" not in text, case
    assert digest(last) == before
    assert not (tmp_path / "b").exists()  # the refused run's own folder is not left behind


@pytest.mark.slow
def test_a_full_disk_during_a_save_is_one_message_and_keeps_the_previous_checkpoint(
    cfg_factory, image_tree, tmp_path
):
    run = tmp_path / "run"
    common = [*TREE, f"dataset.root={image_tree}"]
    train(cfg_factory(*common), run)
    before = digest(run / "checkpoints" / "last.pt")
    # a file-size limit fails writes past 2 MB as a full disk would; the checkpoint is larger
    proc = launch(
        *common, "trainer.epochs=2", f"hydra.run.dir={run}", "resume=auto", preexec_fn=limit_file_size(2**21)
    )
    err, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in err
    assert f"Could not write the checkpoint {run / 'checkpoints' / 'last.pt'}" in err
    assert "the previous last.pt is intact" in err and "resume=auto" in err
    assert digest(run / "checkpoints" / "last.pt") == before
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]


def awkward_tree(root: Path) -> Path:
    """Two classes named b'caf\\xe9' (Latin-1, not UTF-8) and 'new\\nline'; an image named with a
    byte that is not UTF-8, and an unreadable file whose name holds such a byte and a newline."""
    make_tree(root, {"a": (8, 3), "b": (8, 3)})
    for split in ("train", "valid"):
        base = os.fsencode(root / split)
        os.rename(base + b"/a", base + b"/caf\xe9")
        os.rename(base + b"/b", base + b"/new\nline")
        os.rename(base + b"/caf\xe9/000.png", base + b"/caf\xe9/0\xff.png")
        with open(base + b"/new\nline/bro\nken\xfe.png", "wb") as f:
            f.write(b"not an image")
    return root


@pytest.mark.slow
def test_names_that_are_not_utf8_or_hold_newlines_train_log_and_predict(tmp_path):
    tree, run = awkward_tree(tmp_path / "tree"), tmp_path / "run"
    proc = launch(*TREE, f"dataset.root={tree}", f"hydra.run.dir={run}")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out and "Logging error" not in out
    assert "cannot be opened and are left out" in out
    assert r"bro\nken\xfe.png (not an image PIL can read)" in out
    state = weights(run)
    assert state["class_names"] == [r"caf\xe9", r"new\nline"]
    assert r"caf\xe9" in (run / "train.log").read_text(encoding="utf-8")
    assert len((run / "metrics.csv").read_text(encoding="utf-8").splitlines()) == 2
    assert {r"val_per_class/caf\xe9", r"val_per_class/new\nline"} <= set(scalar_tags(run))

    output = tmp_path / "predictions.csv"
    predicted = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "predict.py"),
            f"checkpoint={run / 'checkpoints' / 'best.pt'}",
            f"input={tree / 'valid'}",
            f"output={output}",
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert r"bro\nken\xfe.png" in predicted.stderr
    rows = output.read_text(encoding="utf-8").splitlines()
    assert len(rows) == 1 + 6  # a header and the six readable images, one line each
    assert any(r"caf\xe9/0\xff.png" in row for row in rows)
    assert all(row.split(",")[1] in (r"caf\xe9", r"new\nline") for row in rows[1:])


@pytest.mark.parametrize("links", [True, False])
def test_best_pt_is_its_epochs_last_pt_and_keeps_it(tmp_path, monkeypatch, links):
    from common.run_folder import RunFolder
    from trainer.checkpoint import Checkpointer

    if not links:  # a file system without hard links (EXDEV, as across devices): best.pt is a copy
        monkeypatch.setattr(os, "link", lambda *a: (_ for _ in ()).throw(OSError(18, "cross-device")))
    checkpoints = Checkpointer(RunFolder(tmp_path))
    weights = torch.zeros(3)
    checkpoints.save_epoch({"epoch": 1, "w": weights}, improved=True)  # written on a worker thread
    weights += 1  # training goes on meanwhile: the checkpoint holds the epoch's snapshot
    checkpoints.wait()
    best = tmp_path / "checkpoints" / "best.pt"
    assert torch.equal(torch.load(best, weights_only=True)["w"], torch.zeros(3))
    assert digest(best) == digest(tmp_path / "checkpoints" / "last.pt")
    assert (best.stat().st_nlink == 2) is links  # one file, two names: written once
    checkpoints.save_epoch({"epoch": 2, "w": torch.ones(3)}, improved=False)
    checkpoints.close()
    assert torch.load(best, weights_only=True)["epoch"] == 1  # a later last.pt is a new file
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2
    assert sorted(p.name for p in best.parent.iterdir()) == ["best.pt", "last.pt"]  # no temporary left


def test_an_epochs_checkpoint_is_a_snapshot_with_the_state_dicts_metadata(tmp_path):
    from trainer.checkpoint import copied

    model = torch.nn.BatchNorm1d(3)  # a module with a version in the state dict's metadata
    state = {"model": model.state_dict(), "optimizer": {"state": {0: {"exp_avg": torch.ones(2)}}}}
    snapshot = copied(state)
    model.running_mean += 1
    state["optimizer"]["state"][0]["exp_avg"] += 1
    assert torch.equal(snapshot["model"]["running_mean"], torch.zeros(3))
    assert torch.equal(snapshot["optimizer"]["state"][0]["exp_avg"], torch.ones(2))
    assert snapshot["model"]._metadata == model.state_dict()._metadata


def test_an_epochs_checkpoint_waits_for_its_record_however_the_record_ends(tmp_path):
    from concurrent.futures import Future

    from common.run_folder import RunFolder
    from trainer.checkpoint import Checkpointer

    checkpoints = Checkpointer(RunFolder(tmp_path))
    last = tmp_path / "checkpoints" / "last.pt"
    record: Future[None] = Future()  # the epoch's row of metrics.csv, still being written
    checkpoints.save_epoch({"epoch": 1}, improved=False, after=record)
    time.sleep(0.3)
    assert not last.exists()  # last.pt never holds an epoch the record lacks
    record.set_exception(OSError(28, "No space left on device"))  # the logger's to report
    checkpoints.close()
    assert torch.load(last, weights_only=True)["epoch"] == 1
