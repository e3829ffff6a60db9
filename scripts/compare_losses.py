"""Compare the long-tail methods on your data over several seeds or folds; print one table.

    python scripts/compare_losses.py [seeds=3] [folds=0] [methods=ce,ldam_drw,...] [output_dir=DIR]
                                     [any train.py override ...]

Every method trains with the same settings (the built-in long-tailed digits unless the overrides
choose a dataset) and differs from the others only by its own settings:

    ce              cross-entropy
    ce_drw          cross-entropy, class-balanced weights from 80% of training (DRW)
    focal           focal loss (gamma 2)
    ldam            LDAM with its cosine head
    ldam_drw        LDAM-DRW
    logit_adjusted  logit-adjusted cross-entropy, tau 1 (Balanced Softmax)
    ce_posthoc      the ce run's model, predicting with post-hoc logit adjustment (tau 1)
    ce_taunorm      the ce run's model with its classifier tau-normalised (tau 1, Kang et al. 2020)
    ce_sam          cross-entropy with SAM (rho 0.05; a second forward and backward per batch)
    ce_repeat       cross-entropy with repeat-factor sampling (dataset.sampler=repeat_factor)
    ce_las          cross-entropy with label-aware smoothing (MiSLAS's [0.3, 0.0], concave)
    ldam_drw_sam    LDAM-DRW with SAM (rho 0.05)
    ce_imbsam       cross-entropy with ImbSAM (rho 0.05, the ascent for the few-shot classes only)
    ce_mixup        cross-entropy with Mixup (mixup=default): MiSLAS's first stage
    crt             classifier re-training: the ce run's backbone frozen, a fresh classifier
                    trained for a quarter of the epochs with class-balanced sampling
    mislas          MiSLAS's second stage (experiment=mislas_stage2) on the ce_mixup run, for a
                    quarter of the epochs
    wb              weight balancing's second stage (experiment=wb_stage2) on the ce run (its
                    weight decay as configured, not tuned), for a quarter of the epochs
    plain_loop      scripts/tools/reference_loop.py: cross-entropy in a plain PyTorch loop that shares
                    no code with the Trainer, at the same model, data, lr, weight decay, epochs,
                    batch size, crop scale and flip

Label smoothing is off for every method (``loss.label_smoothing=0``) so that it is no hidden
difference. Each method runs ``seeds`` times (seeds seed, seed+1, ...); with ``folds=K`` each
seed runs every fold of a stratified K-fold of the training images (``dataset.folds=K``, the
validation split carved from the training folder, which varies the validation images as well as
the seed; not for plain_loop, which reads two folders). The table gives the mean and standard
deviation over those runs of the raw model after the last epoch: balanced
accuracy, macro-F1 and few-shot accuracy (classes with fewer than ``trainer.few_shot``
training images; "-" where there is none). A method whose mean balanced accuracy lies within
two standard errors of the best one's is marked "within noise": the runs cannot tell them
apart. Each run's balanced accuracy is printed as it ends. Runs are kept under ``output_dir``
(default outputs/compare_losses/<time>)/<method>_s<seed> (``<method>_f<fold>_s<seed>`` with folds).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from evaluate import evaluate  # noqa: E402

from common.errors import UserError  # noqa: E402
from common.run_folder import RunFolder  # noqa: E402
from data.loaders import ImageData  # noqa: E402
from train import train  # noqa: E402
from trainer.evaluation.metrics import Evaluation  # noqa: E402
from trainer.shell.registry import register_configs  # noqa: E402

from lib.app import fail, parse_settings  # noqa: E402
from tools import reference_loop  # noqa: E402

COMMON = ["trainer.progress=false", "loss.label_smoothing=0.0"]
METHODS = (
    "ce", "ce_drw", "focal", "ldam", "ldam_drw", "logit_adjusted", "ce_posthoc", "ce_taunorm", "crt",
    "ce_sam", "ce_imbsam", "ce_repeat", "ce_las", "ldam_drw_sam", "ce_mixup", "mislas", "wb", "plain_loop",
)  # fmt: skip
# methods that start from another method's run of the same seed (their first stage)
STAGE_ONE = {"ce_posthoc": "ce", "ce_taunorm": "ce", "crt": "ce", "wb": "ce", "mislas": "ce_mixup"}
SECOND_STAGES = {"crt": "experiment=crt", "wb": "experiment=wb_stage2", "mislas": "experiment=mislas_stage2"}
OWN_KEYS = ("seeds", "folds", "methods", "output_dir")


def loss_overrides(epochs: int) -> dict[str, list[str]]:
    """Each trained method's own settings; DRW switches on for the last fifth, as in the paper (160/200)."""
    drw = f"loss.drw_epoch={int(0.8 * epochs) + 1}"
    return {
        "ce": ["loss=ce"],
        "ce_drw": ["loss=ce", drw],
        "focal": ["loss=focal"],
        "ldam": ["loss=ldam", "model.head=cosine"],
        "ldam_drw": ["loss=ldam", "model.head=cosine", drw],
        "logit_adjusted": ["loss=logit_adjusted"],
        "ce_sam": ["loss=ce", "optimizer.sam.rho=0.05"],
        "ce_imbsam": ["loss=ce", "optimizer.sam.rho=0.05", "optimizer.sam.classes=tail"],
        "ce_mixup": ["loss=ce", "mixup=default"],
        "ce_repeat": ["loss=ce", "dataset.sampler=repeat_factor"],
        "ce_las": ["loss=ce", "loss.label_aware_smoothing=[0.3,0.0]"],
        "ldam_drw_sam": ["loss=ldam", "model.head=cosine", drw, "optimizer.sam.rho=0.05"],
    }


def headline(res: dict[str, Any] | Evaluation) -> dict[str, float | None]:
    """Balanced accuracy, macro-F1 and few-shot accuracy of an evaluation (or of a report dict)."""
    get = res.get if isinstance(res, dict) else lambda k: getattr(res, k)
    return {k: get(k) for k in ("balanced_acc", "macro_f1", "acc_few")}


@dataclass
class CompareSettings:
    seeds: int = 3  # runs per method (per fold with folds)
    folds: int = 0  # K >= 2: each seed runs every fold of a stratified K-fold; 0: the data's own split
    methods: str = ",".join(METHODS)  # comma-separated
    output_dir: str = ""  # default outputs/compare_losses/<time>


@dataclass(frozen=True)
class Plan:
    """What to run: the methods, each at every (seed, fold), and where; the overrides for train.py."""

    seeds: int
    folds: int
    methods: list[str]
    out: Path
    overrides: list[str]

    def runs(self, first_seed: int) -> list[tuple[int, int | None]]:
        folds = range(self.folds) if self.folds else [None]
        return [(first_seed + i, fold) for i in range(self.seeds) for fold in folds]


def parse_args(argv: list[str]) -> Plan:
    """``seeds``, ``folds``, ``methods`` and ``output_dir`` are this script's settings
    (CompareSettings); every other ``key=value``, in Hydra's override syntax, goes to train.py's config."""
    if {"--help", "-h"} & set(argv):
        print(__doc__)
        sys.exit(0)
    try:
        parsed = OverridesParser.create().parse_overrides(argv)
    except HydraException as err:
        reason = str(err).splitlines()[0]
        raise UserError(f"{reason}: each setting is key=value, in Hydra's override syntax") from None
    own = {o.key_or_group: o.input_line.partition("=")[2] for o in parsed if o.key_or_group in OWN_KEYS}
    overrides = [o.input_line for o in parsed if o.key_or_group not in OWN_KEYS]
    settings = parse_settings(CompareSettings, own, "compare_losses")
    methods = [m for m in settings.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        choices = ", ".join(METHODS)
        raise UserError(f"methods={settings.methods!r}: unknown {unknown}; choose among {choices}.")
    if settings.seeds < 1:
        raise UserError(f"seeds={settings.seeds} must be at least 1 (the number of seeds per method).")
    if settings.folds == 1 or settings.folds < 0:
        raise UserError(f"folds={settings.folds} must be 0 (the data's own split) or at least 2.")
    if settings.folds and "plain_loop" in methods:
        raise UserError(
            "folds: plain_loop reads a training and a validation folder and cannot carve folds; "
            "leave it out of methods, or compare over seeds (folds=0)."
        )
    out = settings.output_dir or ROOT / "outputs" / "compare_losses" / time.strftime("%Y-%m-%d_%H-%M-%S")
    return Plan(settings.seeds, settings.folds, methods, Path(out), overrides)


def plain_loop(cfg: DictConfig) -> dict[str, Any]:
    """The reference loop at the settings of ``cfg`` (its dataset built only to find the tree)."""
    data = ImageData(OmegaConf.to_object(cfg.dataset))
    warmup = cfg.scheduler.get("warmup_epochs", 0) if cfg.scheduler else 0
    return reference_loop.run(
        data.root,
        epochs=cfg.trainer.epochs,
        lr=cfg.optimizer.lr,
        weight_decay=cfg.optimizer.get("weight_decay", 0.0),
        seed=cfg.seed,
        model_name=cfg.model.name,
        image_size=data.settings.image_size,
        batch_size=data.settings.batch_size,
        scale=data.settings.scale[0],
        hflip=data.settings.hflip,
        warmup_epochs=warmup,
        train_dir=data.settings.train_dir,
        val_dir=data.settings.val_dir,
    )


def run_method(
    method: str, run: tuple[int, int | None], plan: Plan, make: Callable[[list[str]], DictConfig]
) -> dict[str, float | None]:
    """Train (or derive) one method at one (seed, fold); its headline numbers."""
    seed, fold = run
    split = [f"dataset.folds={plan.folds}", f"dataset.fold={fold}"] if fold is not None else []
    seeded = [*COMMON, *plan.overrides, *split, f"seed={seed}"]
    base = make(seeded)
    epochs = base.trainer.epochs
    tag = f"f{fold}_s{seed}" if fold is not None else f"s{seed}"
    out = plan.out
    first = RunFolder(out / f"{STAGE_ONE.get(method, 'ce')}_{tag}").last
    if method == "plain_loop":
        return headline(plain_loop(base))
    if method in ("ce_posthoc", "ce_taunorm"):
        adjustment = {"logit_adjust": "1.0"} if method == "ce_posthoc" else {"tau_norm": "1.0"}
        report = evaluate(
            {
                "checkpoint": str(first),
                "output_dir": str(out / f"{method}_{tag}"),
                "ema": "false",
                "tta": "none",
                "device": base.trainer.device,
            }
            | adjustment
        )
        return headline(report)
    if method in SECOND_STAGES:
        quarter = f"trainer.epochs={max(1, epochs // 4)}"
        own = [SECOND_STAGES[method], f"model.checkpoint_path={first}", quarter]
    else:
        own = loss_overrides(epochs)[method]
    summary = train(make([*seeded, *own]), out / f"{method}_{tag}")
    return headline(summary.final["val"])


def mean_sd(values: list[float | None]) -> tuple[float, float] | None:
    known = [v for v in values if v is not None]
    if not known:
        return None
    return statistics.fmean(known), statistics.stdev(known) if len(known) > 1 else 0.0


def cell(stat: tuple[float, float] | None, seeds: int) -> str:
    """``mean ± sd`` in percent; the mean alone for one seed; "-" where the metric is absent."""
    if stat is None:
        return "-"
    return f"{100 * stat[0]:.1f}" if seeds < 2 else f"{100 * stat[0]:.1f} ± {100 * stat[1]:.1f}"


def table(results: dict[str, list[dict]], runs: int, seconds: dict[str, list[float]] | None = None) -> str:
    """Mean ± sd per method over its ``runs`` runs (seeds x folds), whether each is within noise
    of the best balanced accuracy, and the mean wall time of a run (a derived method's: the
    evaluation alone, its ce run not counted)."""
    stats = {m: {k: mean_sd([r[k] for r in rows]) for k in rows[0]} for m, rows in results.items()}
    best = max(stats, key=lambda m: stats[m]["balanced_acc"][0])
    b_mean, b_sd = stats[best]["balanced_acc"]
    lines = [
        "| method | balanced accuracy | macro-F1 | few-shot accuracy | against the best | s per run |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for method, s in stats.items():
        cells = [cell(s[k], runs) for k in s]
        mean, sd = s["balanced_acc"]
        stderr = ((sd**2 + b_sd**2) / runs) ** 0.5
        if method == best:
            verdict = "best"
        elif runs < 2:
            verdict = "one run: noise unknown"
        else:
            verdict = "within noise" if b_mean - mean <= 2 * stderr else "worse"
        wall = f"{statistics.fmean(seconds[method]):.0f}" if seconds and seconds.get(method) else "-"
        lines.append(f"| {method} | {' | '.join(cells)} | {verdict} | {wall} |")
    return "\n".join(lines)


def main(argv: list[str]) -> str:
    plan = parse_args(argv)
    methods = plan.methods
    firsts = [STAGE_ONE[m] for m in methods if m in STAGE_ONE]
    trained = list(dict.fromkeys([*firsts, *methods]))  # first stages before the methods built on them
    results: dict[str, list[dict]] = {m: [] for m in trained}
    seconds: dict[str, list[float]] = {m: [] for m in trained}
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):

        def make(items: list[str]) -> DictConfig:
            return compose(config_name="train", overrides=items)

        base = make([*COMMON, *plan.overrides])
        runs = plan.runs(base.seed)
        for run in runs:
            for method in trained:
                fold = f", fold {run[1]} of {plan.folds}" if run[1] is not None else ""
                print(f"== {method}, seed {run[0]}{fold}", flush=True)
                start = time.perf_counter()
                result = run_method(method, run, plan, make)
                seconds[method].append(time.perf_counter() - start)
                results[method].append(result)
                print(f"   balanced accuracy {100 * result['balanced_acc']:.1f}", flush=True)  # this run's
    report = table({m: results[m] for m in methods}, len(runs), seconds)
    setting = " ".join(plan.overrides) or "none"
    folds = f" x {plan.folds} folds (stratified)" if plan.folds else ""
    print(
        f"\n{base.trainer.epochs} epochs, {plan.seeds} seed(s) from {base.seed}{folds}, overrides: {setting}"
    )
    print(f"runs in {plan.out}")
    print(report)
    return report


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UserError as err:
        fail(f"compare_losses: {err}")
