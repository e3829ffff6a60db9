"""One page for a folder of runs: ``scripts/report.py run=FOLDER`` on a folder that is neither a
run nor a sweep (``outputs/``, a sweep beside a separate run), and the lower half of a sweep's page.

Every run found under the folder (its own folder holds metrics.csv; a sweep's jobs are runs) is a
row: the settings that tell it apart from the others (the overrides typed, where they differ),
its best monitored value with the binomial standard error of a balanced accuracy, the other
headline numbers of that epoch, and a link to its own report. Runs that differ only in ``seed``
are grouped as mean ± sd. Below: each class's recall at each run's best epoch side by side (the
classes as rows), and the monitored value per epoch of every run in one chart.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from common.files import read_yaml
from common.overrides import as_typed
from common.run_folder import MLFLOW_ARTIFACTS, RunFolder
from reporting.page import document, esc, named, number, read_csv, table
from reporting.recorded import balanced_se, best_of, best_recalls, monitor_of, within_two_se
from trainer.results import column, monitored_model, tag

MAX_DEPTH = 3  # how far below the folder runs are looked for
SEED = "seed"
SHOWN = ("macro_f1", "gmean", "acc_few")  # beside the monitor, at its best epoch


@dataclass(frozen=True)
class Compared:
    """One run as its folder records it."""

    folder: Path
    name: str  # its path below the compared folder
    given: dict[str, str]  # the overrides typed: key -> value
    monitor: str
    mode: str  # max or min: which way the monitor is better
    epochs: list[dict[str, str]]  # metrics.csv
    best: float | None  # the best monitored value
    best_row: Mapping[str, str] | None  # metrics.csv's row of its epoch
    se: float | None

    @property
    def best_epoch(self) -> int | None:
        return int(self.best_row["epoch"]) if self.best_row else None

    def at_best(self, name: str) -> float | None:
        """A number of the monitored model at the best epoch (``macro_f1``: its macro-F1)."""
        row = self.best_row or {}
        return number(row.get(column(tag(monitored_model(self.monitor), name))))


def runs_under(folder: Path, depth: int = MAX_DEPTH) -> list[Path]:
    """Every run folder under ``folder`` (not followed through links or hidden folders), in path order."""
    found: list[Path] = []
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return found
    for child in children:
        if child.name.startswith(".") or child.name == MLFLOW_ARTIFACTS:  # MLflow's copies of runs' files
            continue
        if RunFolder(child).metrics_csv.is_file():
            found.append(child)
        elif depth > 1:
            found.extend(runs_under(child, depth - 1))
    return found


def read_run(folder: Path, base: Path) -> Compared:
    run = RunFolder(folder)
    config = read_yaml(run.config_yaml)
    config = config if isinstance(config, dict) else {}
    overrides = read_yaml(run.overrides_yaml)
    typed = [as_typed(str(o)) for o in overrides] if isinstance(overrides, list) else []
    given = dict(o.lstrip("+~").partition("=")[::2] for o in typed)
    monitor, mode = monitor_of(config)
    epochs = read_csv(run.metrics_csv)
    best, row = best_of(epochs, monitor, mode) or (None, None)
    se = balanced_se(folder, monitor, int(row["epoch"]) if row else None)
    name = folder.relative_to(base).as_posix()
    return Compared(folder, name, given, monitor, mode, epochs, best, row, se)


def typed(run: Compared, key: str) -> str:
    """What the run's command line set ``key`` to, or ``(default)``."""
    return run.given.get(key, "(default)")


def distinguishing(runs: list[Compared]) -> list[str]:
    """The override keys whose values differ between the runs (a key one run lacks counts as its default)."""
    keys = sorted({k for r in runs for k in r.given if k not in ("resume", "overwrite")})
    return [k for k in keys if len({r.given.get(k, "") for r in runs}) > 1]


def overview(runs: list[Compared], keys: list[str]) -> str:
    monitor = runs[0].monitor
    scored = [r for r in runs if r.best is not None]
    pick = max if runs[0].mode == "max" else min
    top = pick(scored, key=lambda r: r.best) if scored else None
    rows = []
    for r in runs:
        link = (
            f'<a href="{esc(r.name)}/report.html">{esc(r.name)}</a>'
            if RunFolder(r.folder).report.exists()
            else esc(r.name)
        )
        value = "no epoch" if r.best is None else f"{r.best:.4f}"
        se = "" if r.se is None else f"{r.se:.4f}"
        close = (
            top is not None
            and r is not top
            and r.best is not None
            and within_two_se(r.best, r.se, top.best, top.se)
        )
        mark = '<span class="bad">best</span>' if r is top else "within noise" if close else ""
        shown = [f"{v:.4f}" if (v := r.at_best(name)) is not None else "" for name in SHOWN]
        rows.append(
            [
                link,
                *(esc(typed(r, k)) for k in keys),
                value,
                se,
                mark,
                *shown,
                esc(r.best_epoch or ""),
                len(r.epochs),
            ]
        )
    head = [
        "run",
        *keys,
        f"best {monitor}",
        "se",
        "",
        "macro-F1",
        "G-mean",
        "few-shot acc",
        "best epoch",
        "epochs",
    ]
    note = (
        "<p class='muted'>Each run at its own best epoch. se: the standard error of a balanced accuracy "
        "(binomial, from the validation images per class); within noise: within two standard errors of "
        "the best. Settings: the overrides typed that differ between the runs.</p>"
    )
    if len({r.monitor for r in runs}) > 1:
        note += "<p class='bad'>The runs monitor different numbers: the best column mixes them.</p>"
    return table(head, rows, names=1 + len(keys)) + note


def seed_groups(runs: list[Compared], keys: list[str]) -> str:
    """Runs that differ only in their seed, as one setting: mean ± sd of their best values."""
    if SEED not in keys:
        return ""
    groups: dict[tuple[str, ...], list[float]] = {}
    for r in runs:
        if r.best is not None:
            groups.setdefault(tuple(typed(r, k) for k in keys if k != SEED), []).append(r.best)
    rows = [
        [
            *(esc(v) for v in setting),
            len(values),
            f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}",
        ]
        for setting, values in groups.items()
        if len(values) > 1
    ]
    if not rows:
        return ""
    others = [k for k in keys if k != SEED]
    heading = (
        f"<h2>Over seeds</h2><p class='muted'>runs that differ only in {SEED}: best {runs[0].monitor}</p>"
    )
    return heading + table([*others, "runs", "mean ± sd"], rows, names=len(others))


def recalls_side_by_side(runs: list[Compared]) -> str:
    columns = {}
    for r in runs:
        if r.best_epoch is not None:
            try:
                columns[r.name] = best_recalls(r.folder, monitored_model(r.monitor), r.best_epoch)
            except (OSError, ValueError, KeyError):
                continue
    classes = sorted({c for recalls in columns.values() for c in recalls})
    if not columns or not classes:
        return ""
    rows = [
        [named(c), *(f"{v:.3f}" if (v := recalls.get(c)) is not None else "" for recalls in columns.values())]
        for c in classes
    ]
    heading = (
        "<h2>Recall of each class</h2><p class='muted'>each run at its best epoch; empty: not "
        "validated there</p>"
    )
    return heading + table(["class", *columns], rows)


def overlaid(runs: list[Compared]) -> str:
    from reporting.plots import curves

    monitor = runs[0].monitor
    epochs = sorted({int(row["epoch"]) for r in runs for row in r.epochs if row.get("epoch", "").isdigit()})
    if not epochs:
        return ""
    lines = {}
    for r in runs:
        if r.monitor == monitor:
            by_epoch = {
                int(row["epoch"]): number(row.get(column(monitor)))
                for row in r.epochs
                if row.get("epoch", "").isdigit()
            }
            lines[r.name] = [by_epoch.get(e) for e in epochs]
    return "<h2>Curves</h2>" + curves(epochs, lines, f"{monitor} of each run", monitor.rsplit("/", 1)[-1])


def sections(runs: list[Compared], with_overview: bool = True) -> str:
    """The comparison of ``runs``: the overview table (left out below a sweep's own job table),
    seeds grouped, per-class recalls side by side, the curves overlaid."""
    if not runs:
        return ""
    keys = distinguishing(runs)
    parts = [
        overview(runs, keys) if with_overview else "",
        seed_groups(runs, keys),
        recalls_side_by_side(runs),
        overlaid(runs),
    ]
    return "".join(parts)


def comparison_page(folder: Path) -> str:
    runs = [read_run(p, folder) for p in runs_under(folder)]
    where = f"{esc(folder.resolve())} · {len(runs)} run(s)"
    body = f"<h1>Runs in {esc(folder.name)}</h1><div class='muted'>{where}</div>"
    return document(f"Runs in {folder.name}", body + (sections(runs) or "<p>No run found here.</p>"))
