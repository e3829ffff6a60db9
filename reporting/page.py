"""One self-contained HTML page per run (``RUN/report.html``) or sweep (``SWEEP_DIR/report.html``).

Read from the files a run leaves (``metrics.csv``, ``per_class.csv``, ``metrics.json``,
``classes.csv``, ``galleries/``, ``.hydra/``), so ``scripts/report.py`` makes it for any finished
run, and train.py at the end of each. The first screen answers which run, how good, and which
classes fail; then the settings that differ from the defaults (what was typed), the curves, the
best epoch's table per class, the confusion matrix (its largest cells when the classes are too
many to read), the training class sizes and the error gallery. Pictures are embedded, every
text escaped: it opens offline, from anywhere, in any browser.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.files import read_yaml
from common.overrides import as_typed
from common.run_folder import RunFolder, SweepFolder
from reporting.recorded import best_of
from trainer.results import DETAIL_CLASSES, metric, monitored_model, shown, validation_names

log = logging.getLogger("train")

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;line-height:1.4}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.muted{color:#666;font-size:13px} .box{background:#f4f6fa;border-radius:6px;padding:12px 16px;margin:12px 0}
.big{font-size:20px;font-weight:600} table{border-collapse:collapse;font-size:13px;margin:6px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right} th{background:#f0f0f0}
td.name,th.name{text-align:left;max-width:360px;overflow-wrap:anywhere} .bad{color:#b00020;font-weight:600}
img{max-width:100%} .grid{display:flex;flex-wrap:wrap;gap:12px} code{background:#f0f0f0;padding:1px 4px}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def named(value: Any) -> str:
    """A class name, escaped and isolated (``<bdi>``): a right-to-left name never moves the
    numbers beside it."""
    return f"<bdi>{esc(value)}</bdi>"


def picture(data: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file the run wrote; none when it is missing, unreadable or garbled."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def per_class_scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support of each class from a confusion matrix (rows: true)."""
    tp = matrix.diagonal().astype(float)
    support, predicted = matrix.sum(1), matrix.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(tp), where=total > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def table(head: Sequence[str], rows: Sequence[Sequence[Any]], names: int = 1) -> str:
    """An HTML table; the first ``names`` columns are text (left-aligned), the rest numbers."""
    cls = ['class="name"' if i < names else "" for i in range(len(head))]
    out = [
        "<table><tr>" + "".join(f"<th {c}>{esc(h)}</th>" for c, h in zip(cls, head, strict=True)) + "</tr>"
    ]
    for row in rows:
        out.append(
            "<tr>" + "".join(f"<td {c}>{cell}</td>" for c, cell in zip(cls, row, strict=True)) + "</tr>"
        )
    return "".join(out) + "</table>"


class RunReport:
    """What one run's folder holds, read once, and its page."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        run = RunFolder(folder)
        self.config = read_yaml(run.config_yaml) or {}
        self.overrides = [as_typed(str(o)) for o in read_yaml(run.overrides_yaml) or []]
        self.epochs = read_csv(run.metrics_csv)
        self.per_class = read_csv(run.per_class_csv)
        self.classes = read_csv(run.classes_csv)
        try:
            self.summary = json.loads(run.metrics_json.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.summary = {}
        trainer = self.config.get("trainer", {}) if isinstance(self.config, dict) else {}
        self.monitor = self.summary.get("monitor") or trainer.get("monitor", "val/balanced_acc")
        self.prefix = monitored_model(self.monitor)
        # best.pt's gallery when the run drew one, else the last drawn during training
        best = run.best_gallery(self.prefix)
        drawn = sorted(run.galleries.glob("*_epoch*.png")) if run.galleries.is_dir() else []
        self.gallery_is_best = best.is_file()
        self.gallery = best if self.gallery_is_best else (drawn[-1] if drawn else None)
        self.names = self.summary.get("class_names") or [row["class"] for row in self.classes]
        self.weights = "EMA" if self.summary.get("weights") == "ema" else "raw"
        mode = str(trainer.get("monitor_mode", "max"))
        found = None if "best_metric" in self.summary else best_of(self.epochs, self.monitor, mode)
        self.best_so_far = (found[0], found[1]["epoch"]) if found else None  # value, epoch

    def headline(self) -> str:
        """Which run, how good, which classes fail: the first screen."""
        s, parts = self.summary, []
        total = (self.config.get("trainer") or {}).get("epochs", "?")
        model = (self.config.get("model") or {}).get("name", "?")
        loss = str((self.config.get("loss") or {}).get("_target_", "?")).rsplit(".", 1)[-1]
        typed = " ".join(map(str, self.overrides)) or "the defaults"
        parts.append(f"<div>{esc(model)}, {esc(loss)}; <code>{esc(typed)}</code></div>")
        last = self.epochs[-1]["epoch"] if self.epochs else "no"
        if s.get("best_metric") is not None:
            parts.append(
                f'<div class="big">best {esc(self.monitor)} = {s["best_metric"]:.4f} at epoch '
                f"{esc(s['best_epoch'])} (best.pt, {esc(self.weights)} weights)</div>"
            )
        elif self.best_so_far is not None:  # stopped or still training: metrics.json comes at the end
            value, epoch = self.best_so_far
            parts.append(
                f'<div class="big">best {esc(self.monitor)} so far = {value:.4f} at epoch {esc(epoch)} '
                f"(best.pt; from metrics.csv: the run has not finished)</div>"
            )
        parts.append(f'<div class="muted">{esc(last)} of {esc(total)} epochs recorded</div>')
        valid = s.get("valid") or {}
        for name, result in (
            ("validation, best epoch", valid),
            ("test, held out, best.pt once", s.get("test")),
        ):
            if result:
                parts.append(
                    f"<div>{esc(name)}: balanced accuracy <b>{result['balanced_acc']:.4f}</b>, accuracy "
                    f"{result['acc']:.4f}, macro-F1 {result['macro_f1']:.4f} "
                    f"({esc(result['images'])} images)</div>"
                )
        recalls = {k: v for k, v in (valid.get("per_class") or {}).items() if v is not None}
        if recalls:
            worst = sorted(recalls.items(), key=lambda kv: kv[1])[:3]
            listed = ", ".join(f'<span class="bad">{named(k)}</span> {v:.0%}' for k, v in worst)
            parts.append(f"<div>lowest recall at the best epoch: {listed}</div>")
        counts = [int(row["train"]) for row in self.classes if row.get("train")]
        if counts:
            parts.append(
                f'<div class="muted">{len(counts)} classes, {min(counts)} to {max(counts)} training images '
                f"per class (imbalance {max(counts) / max(1, min(counts)):.3g})</div>"
            )
        return '<div class="box">' + "".join(parts) + "</div>"

    def settings(self) -> str:
        choices = {k: self.config.get(k, {}) for k in ("model", "loss", "optimizer")}
        rows = [
            ["model", esc((choices["model"] or {}).get("name", "?"))],
            ["loss", esc(str((choices["loss"] or {}).get("_target_", "?")).rsplit(".", 1)[-1])],
            ["lr", esc((choices["optimizer"] or {}).get("lr", "?"))],
        ]
        typed = (
            "".join(f"<li><code>{esc(o)}</code></li>" for o in self.overrides)
            or "<li>none: every default</li>"
        )
        return (
            "<h2>Settings</h2><p>What was typed, i.e. what differs from the defaults "
            f"(the whole config: <code>.hydra/config.yaml</code>):</p><ul>{typed}</ul>"
            + table(["", "value"], rows)
        )

    def curves(self) -> str:
        from reporting.plots import curves

        if not self.epochs:
            return "<h2>Curves</h2><p>No epoch recorded.</p>"
        epochs = [int(r["epoch"]) for r in self.epochs]

        def series(*columns: str) -> dict[str, list[float | None]]:
            return {c: [number(r.get(c)) for r in self.epochs] for c in columns if c in self.epochs[0]}

        tau = (self.config.get("trainer") or {}).get("posthoc_tau")
        p = self.prefix
        loss = series("train_loss", "val_loss", "val_ema_loss")
        accuracy = series("val_acc", "val_balanced_acc", "val_balanced_acc_adjusted", "val_ema_balanced_acc")
        charts = [
            curves(
                epochs, loss, "Loss (val, val_ema: plain cross-entropy; train: the training loss)", "loss"
            ),
            curves(epochs, accuracy, f"Accuracy (adjusted: post-hoc logit adjustment, tau {tau})", "share"),
        ]
        mine = [r for r in self.per_class if r.get("model") == p]
        if mine and len(self.names) <= DETAIL_CLASSES:
            recall = {(r["class"], int(r["epoch"])): number(r["recall"]) for r in mine}
            lines = {name: [recall.get((name, e)) for e in epochs] for name in self.names}
            charts.append(curves(epochs, lines, f"Recall of each class ({p})", "recall"))
        else:
            groups = series(f"{p}_acc_many", f"{p}_acc_medium", f"{p}_acc_few")
            charts.append(curves(epochs, groups, f"Many-, medium-, few-shot accuracy ({p})", "accuracy"))
        return "<h2>Curves</h2><div class='grid'>" + "".join(charts) + "</div>"

    def results(self, key: str, heading: str) -> str:
        """The per-class table and the confusion matrix of one evaluation in metrics.json."""
        from trainer.evaluation.figures import confusion_image
        from trainer.evaluation.reports import top_confusions

        result = self.summary.get(key)
        if not result:
            return ""
        matrix = np.asarray(result["confusion_matrix"], dtype=np.int64)
        scores = per_class_scores(matrix)
        counts = {row["class"]: row.get("train", "") for row in self.classes}
        validated = scores["support"] > 0  # a class without validation images: not validated, last
        order = sorted(range(len(self.names)), key=lambda i: (not validated[i], scores["recall"][i]))

        def cells(i: int) -> list[str]:
            if not validated[i]:
                return [f"{scores['precision'][i]:.3f}", "not validated", ""]
            return [f"{scores[k][i]:.3f}" for k in ("precision", "recall", "f1")]

        rows = [
            [named(self.names[i]), esc(counts.get(self.names[i], "")), *cells(i), int(scores["support"][i])]
            for i in order
        ]
        tau = result.get("posthoc_tau")
        head = [(metric(k).label, result[k]) for k in validation_names() if k in result]
        head = [(f"{n} (tau {tau:g})" if "post-hoc" in n and tau is not None else n, v) for n, v in head]
        summary = table(["", "value"], [[esc(k), shown(v)] for k, v in head])
        if len(self.names) <= DETAIL_CLASSES:
            data = io.BytesIO()
            confusion_image(matrix.tolist(), self.names, heading, scale=1).save(data, format="PNG")
            confusion = picture(data.getvalue(), f"{heading}: confusion matrix")
        else:
            confusion = (
                "<p>The largest confusions (too many classes for a readable matrix):</p>"
                + markdown_table(top_confusions(matrix, self.names))
            )
        per_class = table(["class", "train", "precision", "recall", "F1", "support"], rows)
        return (
            f"<h2>{esc(heading)}</h2><p class='muted'>{esc(result.get('data', ''))}; per class, lowest "
            f"recall first (train: training images)</p><div class='grid'><div>{summary}</div>"
            f"<div>{per_class}</div><div>{confusion}</div></div>"
        )

    def classes_chart(self) -> str:
        from reporting.plots import class_histogram

        counts = [int(row["train"]) for row in self.classes if row.get("train")]
        if not counts:
            return ""
        title = "Training images per class, largest first"
        return f"<h2>Class sizes</h2>{class_histogram(self.names, counts, title)}"

    def errors(self) -> str:
        if self.gallery is None:
            return ""
        best = self.summary.get("best_epoch") or (self.best_so_far[1] if self.best_so_far else None)
        if self.gallery_is_best:
            at = f", epoch {best}" if best is not None else ""
            note = f"best.pt's weights{at}: the mistakes of the model this report presents"
        else:
            drawn = self.gallery.stem.rsplit("epoch", 1)[-1].lstrip("0") or "0"
            note = f"the last gallery drawn, epoch {drawn}" + (f"; best.pt is epoch {best}" if best else "")
        where = f"{note} (galleries/{self.gallery.name})"
        heading = f"<h2>Most confident mistakes</h2><p class='muted'>{esc(where)}</p>"
        return heading + picture(self.gallery.read_bytes(), "error gallery")

    def page(self) -> str:
        s = self.summary
        chosen = f"epoch {s.get('best_epoch')}, {self.weights} weights, T 1"
        body = (
            f"<h1>{esc(self.folder.name)}</h1><div class='muted'>{esc(self.folder.resolve())} · report of "
            f"{time.strftime('%Y-%m-%d %H:%M')}</div>"
            + self.headline()
            + self.results("valid", f"Validation at the best epoch, {chosen}")
            + self.results("test", f"Test split (held out), best.pt once: {chosen}")
            + self.errors()
            + self.curves()
            + self.classes_chart()
            + self.settings()
        )
        return document(f"Run {self.folder.name}", body)


def markdown_table(text: str) -> str:
    """A Markdown table (``top_confusions``) as HTML, its cells escaped."""
    lines = [line.strip().strip("|").split("|") for line in text.strip().splitlines() if "---" not in line]
    head, rows = lines[0], lines[1:]
    return table([h.strip() for h in head], [[esc(c.strip()) for c in row] for row in rows], names=2)


def document(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def sweep_page(folder: Path, below: str = "") -> str:
    """A sweep's jobs, best marked, each linked to its own report; then ``below`` (the comparison
    of the jobs)."""
    rows = read_csv(SweepFolder(folder).results_csv)
    if not rows:
        return document(
            folder.name, f"<h1>{esc(folder.name)}</h1><p>No sweep_results.csv: no finished sweep.</p>"
        )
    keys = [k for k in rows[0] if k not in ("folder", "is_best", "within_noise")]
    body_rows = []
    for row in rows:
        job = Path(row["folder"]).name
        link = (
            f'<a href="{esc(job)}/report.html">{esc(job)}</a>'
            if RunFolder(folder / job).report.exists()
            else esc(job)
        )
        mark = (
            '<span class="bad">best</span>'
            if row.get("is_best") in ("True", "true", "1")
            else "within noise"
            if row.get("within_noise") == "1"
            else ""
        )
        shown = {k: f"{float(row[k]):.4f}" if k == "se" and row[k] else row[k] for k in keys}
        body_rows.append([link, *(esc(shown[k]) for k in keys), mark])
    body = f"<h1>Sweep {esc(folder.name)}</h1><div class='muted'>{esc(folder.resolve())}</div>" + table(
        ["job", *keys, ""], body_rows
    )
    noise = (
        "<p class='muted'>se: the standard error of the balanced accuracy (binomial, from the validation "
        "images per class); within noise: within two standard errors of the best.</p>"
    )
    return document(f"Sweep {folder.name}", body + noise + fold_summary(folder) + below)


def fold_summary(folder: Path) -> str:
    """A k-fold sweep's mean ± sd over its folds (fold_summary.json), or nothing."""
    try:
        numbers = json.loads(SweepFolder(folder).fold_summary_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    rows = [[esc(name), f"{n['mean']:.4f} ± {n['sd']:.4f}", esc(n["folds"])] for name, n in numbers.items()]
    heading = "<h2>Over the folds</h2><p class='muted'>one experiment: each fold at its best epoch</p>"
    return heading + table(["number", "mean ± sd", "folds"], rows)
