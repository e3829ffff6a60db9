"""The speed goals, each measured as ratios in one run; ``measure=`` chooses which.

    python scripts/benchmark.py [measure=step] [model=convnextv2_atto] [image_size=64] ...
    python scripts/benchmark.py measure=runs data_root=TREE [timm_train=PATH/train.py] ...
    python scripts/benchmark.py measure=reporting [classes=1000] [epochs=20]
    python scripts/benchmark.py measure=listing [images=100000] [classes=1000]

step: a Trainer epoch against a bare PyTorch loop on the same batches, and the loader alone
(tools/training_step.py). runs: whole runs as processes, train.py against a bare loop and timm's
train.py (tools/whole_runs.py). reporting: what reporting an epoch costs for many classes
against 10 (tools/reporting_cost.py). listing: listing and checking 100,000 files as a tree and
a label file against torchvision's ImageFolder (tools/listing_cost.py). ``--help`` lists each
one's settings.
"""

from __future__ import annotations

import common.startup_signals  # noqa: F401  # isort: skip  (first: a Ctrl-C while libraries load)
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib.app import run_app
from tools.settings import ListingSettings, ReportingSettings, RunsSettings, StepSettings

# measure=NAME: its settings, and the module of tools/ that runs on them (loaded once they pass)
SETTINGS = {
    "step": StepSettings,
    "runs": RunsSettings,
    "reporting": ReportingSettings,
    "listing": ListingSettings,
}
MODULES = {
    "step": "training_step",
    "runs": "whole_runs",
    "reporting": "reporting_cost",
    "listing": "listing_cost",
}


def measure(settings: object) -> None:
    """Run the measure whose settings these are."""
    name = next(name for name, kind in SETTINGS.items() if isinstance(settings, kind))
    importlib.import_module(f"tools.{MODULES[name]}").main(settings)


if __name__ == "__main__":
    run_app(measure, SETTINGS, "benchmark", __doc__, mode="measure")
