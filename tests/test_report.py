"""The run report: one self-contained HTML file per run or sweep, its text escaped, readable at
100 classes."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SHRINK, make_tree

from common.errors import UserError
from trainer.shell.sweep_table import summarise, write_csv

sys.path.insert(0, str(ROOT / "scripts"))
from report import report

ODD = ['<script>x & "quoted"', "ünï חתול", "x" * 70]  # markup, quotes, accents, right-to-left, a long name


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    tree = make_tree(tmp / "tree", {ODD[0]: (10, 3), ODD[1]: (6, 3), ODD[2]: (3, 3)})
    folder = tmp / "run"
    settings = ["dataset=imagefolder", f"dataset.root={tree}", "dataset.batch_size=4", "trainer.epochs=2",
                "trainer.gallery_every=1", f"hydra.run.dir={folder}"]  # fmt: skip
    command = [sys.executable, str(ROOT / "train.py"), *SHRINK, "trainer.report=true", *settings]
    out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    return folder


def test_a_run_ends_with_a_self_contained_report_that_says_how_it_went(run):
    page = (run / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)  # every picture embedded, nothing fetched
    assert page.count("data:image/png;base64,") >= 2  # the confusion picture and the gallery
    assert page.count("<svg") == 4 and page.count("<polyline") >= 3  # the curves (3) and the class sizes
    best = json.loads((run / "metrics.json").read_text())
    assert f"best val/balanced_acc = {best['best_metric']:.4f} at epoch {best['best_epoch']}" in page
    worst = min(best["valid"]["per_class"].items(), key=lambda kv: kv[1])[0]
    first_screen = page.split("</div></div>")[0]
    assert "lowest recall at the best epoch" in first_screen and html_escaped(worst) in first_screen
    assert "<script>" not in page and "&lt;script&gt;x &amp; &quot;quoted&quot;" in page
    assert "ünï" in page and "x" * 70 in page  # whole in the tables (pictures shorten it)
    assert "<bdi>ünï חתול</bdi>" in page  # a right-to-left name keeps the numbers beside it in place
    assert "trainer.epochs=2" in page  # the settings typed
    assert html_escaped(f"best.pt's weights, epoch {best['best_epoch']}") in page  # the weights shown


def html_escaped(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_report_py_writes_a_sweep_page_with_the_best_job_marked_and_linked(run, tmp_path):
    sweep = tmp_path / "sweep"
    for i, name in enumerate(("0_lr-0.1", "1_lr-0.2")):
        shutil.copytree(run, sweep / name)
        (sweep / name / "report.html").unlink()
        overrides = sweep / name / ".hydra" / "overrides.yaml"
        overrides.write_text(f"- optimizer.lr={0.1 * (i + 1):g}\n")
    rows = list(csv.DictReader((sweep / "1_lr-0.2" / "metrics.csv").open()))
    rows[-1]["val_balanced_acc"] = "0.999"  # the second job is the best
    with (sweep / "1_lr-0.2" / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    jobs, best = summarise(sweep, {"optimizer.lr"})
    write_csv(sweep / "sweep_results.csv", jobs, best)
    path = report({"run": str(sweep)})
    page = path.read_text(encoding="utf-8")
    assert path == sweep / "report.html" and (sweep / "0_lr-0.1" / "report.html").exists()
    best_row = next(line for line in page.split("<tr>") if "best</span>" in line)
    assert 'href="1_lr-0.2/report.html"' in best_row and "0.999" in best_row
    assert "Recall of each class" in page and page.count("<svg") == 1  # the jobs compared below the table
    with pytest.raises(UserError, match="not a run's, a sweep's or a folder of runs"):
        report({"run": str(tmp_path / "sweep" / "0_lr-0.1" / "checkpoints")})
    (sweep / "0_lr-0.1" / "metrics.csv").write_bytes(b"garbage,,\n\x00\xff\n")  # one job damaged
    (sweep / "0_lr-0.1" / ".hydra" / "overrides.yaml").write_text("{{{")
    assert report({"run": str(sweep)}) == sweep / "report.html"  # a page still, for every job
    assert 'href="1_lr-0.2/report.html"' in (sweep / "report.html").read_text(encoding="utf-8")


def test_a_hundred_classes_get_their_largest_confusions_instead_of_a_matrix(tmp_path):
    from reporting.write import write_report

    names = [f"class {i:03d}" for i in range(100)]
    rng = np.random.default_rng(0)
    matrix = np.diag(rng.integers(5, 20, 100)) + rng.integers(0, 2, (100, 100))
    matrix[3, 7] = 40  # the largest confusion
    recall = (matrix.diagonal() / matrix.sum(1)).tolist()
    valid = {"data": "somewhere", "images": int(matrix.sum()), "acc": 0.5, "balanced_acc": 0.5,
             "macro_f1": 0.5, "loss": 1.0, "ece": 0.1, "per_class": dict(zip(names, recall, strict=True)),
             "confusion_matrix": matrix.tolist()}  # fmt: skip
    summary = {"monitor": "val/balanced_acc", "best_metric": 0.5, "best_epoch": 2, "weights": "model",
               "class_names": names, "class_counts": list(range(100, 0, -1)), "valid": valid}  # fmt: skip
    (tmp_path / "metrics.json").write_text(json.dumps(summary))
    (tmp_path / "metrics.csv").write_text(
        "epoch,train_loss,val_loss,val_balanced_acc,val_acc_many,val_acc_medium,val_acc_few\n"
        "1,2,2,0.3,0.5,0.3,0.1\n2,1,1.5,0.5,0.7,0.5,0.2\n"
    )
    (tmp_path / "classes.csv").write_text(
        "index,class,train,valid\n" + "".join(f"{i},{n},{100 - i},5\n" for i, n in enumerate(names))
    )
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert (
        "The largest confusions" in page and page.count("<svg") == 4 and "data:image/png" not in page
    )  # 3 curves and the class sizes, no matrix
    first_row = page.split("The largest confusions")[1].split("<tr>")[2]
    assert "class 003" in first_row and "class 007" in first_row and ">40<" in first_row


def test_a_sweep_shows_each_balanced_accuracy_with_its_standard_error_and_what_is_within_noise(run, tmp_path):
    import dataclasses
    import math

    from trainer.shell.sweep_table import read_job, table, within_noise

    job = read_job(run, set())
    counts = {
        r["class"]: int(r["valid"]) for r in csv.DictReader((run / "classes.csv").open(encoding="utf-8"))
    }
    recalls = [
        (float(r["recall"]), counts[r["class"]])
        for r in csv.DictReader((run / "per_class.csv").open(encoding="utf-8"))
        if r["epoch"] == str(job.best_epoch) and r["model"] == "val" and r["recall"]
    ]
    by_hand = math.sqrt(sum(r * (1 - r) / n for r, n in recalls)) / len(recalls)  # binomial, per class
    assert job.se is not None and job.se == pytest.approx(by_hand)
    if job.se == 0:  # every class all right or all wrong at the best epoch: no spread to show
        return
    close = dataclasses.replace(job, folder=tmp_path / "1_lr-0.2", best=job.best - 2 * job.se)
    far = dataclasses.replace(job, folder=tmp_path / "2_lr-0.3", best=job.best - 3 * job.se)
    assert within_noise(close, job) and not within_noise(far, job)  # 2 SE of the difference: 2.83 SE
    shown = table([job, close, far], job)
    assert "<- best" in shown and shown.count("within noise") == 1 and f"{job.se:.4f}" in shown


def test_a_run_that_has_not_finished_shows_its_best_so_far_from_metrics_csv(run, tmp_path):
    stopped = tmp_path / "stopped"
    shutil.copytree(run, stopped)
    (stopped / "metrics.json").unlink()  # written at the end: a stopped or running run has none
    with (stopped / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    best = max(rows, key=lambda row: float(row["val_balanced_acc"]))  # the first of equals
    page = report({"run": str(stopped)}).read_text(encoding="utf-8")
    value = float(best["val_balanced_acc"])
    assert f"best val/balanced_acc so far = {value:.4f} at epoch {best['epoch']}" in page
    assert "the run has not finished" in page and "epoch None" not in page


def test_a_folder_of_runs_gets_one_comparison_page(run, tmp_path):
    outputs = tmp_path / "outputs"
    settings = {"sweep/0_loss-ce": "loss=ce", "sweep/1_loss-focal": "loss=focal", "seed-1": "seed=1",
                "seed-2": "seed=2", "later/seed-3": "seed=3"}  # fmt: skip
    for name, override in settings.items():
        shutil.copytree(run, outputs / name)
        (outputs / name / ".hydra" / "overrides.yaml").write_text(f"- {override}\n")
    shutil.copytree(run, outputs / "mlartifacts" / "abc")  # MLflow's copies of a run's files: no run
    with (outputs / "seed-2" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    rows[0]["val_balanced_acc"] = "0.999"  # seed 2's first epoch is the best of all
    with (outputs / "seed-2" / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    page = report({"run": str(outputs)}).read_text(encoding="utf-8")
    assert "5 run(s)" in page and all((outputs / name / "report.html").is_file() for name in settings)
    head = page.split("</tr>")[0]
    assert ">run</th>" in head and ">loss</th>" in head and ">seed</th>" in head  # what tells them apart
    best = next(line for line in page.split("<tr>") if "best</span>" in line)
    assert 'href="seed-2/report.html"' in best and "0.9990" in best
    assert 'href="sweep/1_loss-focal/report.html"' in page  # a sweep's jobs are runs here too
    first = max(float(r["val_balanced_acc"]) for r in csv.DictReader((run / "metrics.csv").open()))
    values = [first, 0.999, first]  # seeds 1, 2, 3 of the same setting
    grouped = (
        f"(default)</td><td >3</td><td >{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}</td>"
    )
    assert "Over seeds" in page and grouped in page
    assert "Recall of each class" in page and page.count("<svg") == 1  # the curves, overlaid


def test_a_sweep_jobs_overrides_are_shown_as_typed_not_as_hydra_escaped_them(run, tmp_path):
    job = tmp_path / "0_job"
    shutil.copytree(run, job)
    (job / ".hydra" / "overrides.yaml").write_text("- logger.mlflow.tracking_uri=http\\://host\\:5000\n")
    page = report({"run": str(job)}).read_text(encoding="utf-8")
    assert "logger.mlflow.tracking_uri=http://host:5000" in page and "http\\:" not in page
