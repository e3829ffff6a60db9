"""The settings of benchmark.py's measures, typed for Hydra (``measure=step|runs|reporting``): no
torch here, so that ``--help`` and a mistake in them answer before the libraries load."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


@dataclass
class StepSettings:
    """tools/training_step.py: a Trainer epoch against a bare loop on the same batches."""

    model: str = "convnextv2_atto"
    image_size: int = 64
    batch_size: int = 32
    steps: int = 30
    repeats: int = 5
    amp_dtype: str = "none"  # none, float16 or bfloat16
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"
    data_root: str = ""  # an ImageFolder tree for (c); default the built-in digits


@dataclass
class RunsSettings:
    """tools/whole_runs.py: whole runs as processes."""

    data_root: str = MISSING  # a folder with train/ and valid/ class folders
    repeats: int = 3
    timm_train: str = ""  # a checkout's train.py: adds the comparison with timm's own script
    model: str = "convnextv2_atto"
    image_size: int = 32
    batch_size: int = 16


@dataclass
class ReportingSettings:
    """tools/reporting_cost.py: what reporting an epoch costs for many classes."""

    classes: int = 1000  # the many-class run, timed against 10 classes
    epochs: int = 20


@dataclass
class ListingSettings:
    """tools/listing_cost.py: listing and checking a large collection, as a tree and a label file."""

    images: int = 100_000
    classes: int = 1000
    repeats: int = 3
    folder: str = ""  # where the generated collection is written; "": a temporary folder, removed after
