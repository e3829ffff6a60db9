"""Shared fixtures: the real Hydra config, shrunk to CPU-sized runs, and tiny image trees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

from data.settings import DigitsSettings
from trainer.shell.registry import register_configs

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))  # the scripts' modules (evaluate, predict, ...) import by name
register_configs()  # the dataset and trainer schemas, as train.py's entry point registers them
CONFIG_DIR = str(ROOT / "configs")

# Small and fast on 2 cores: 32 px images, one epoch, no progress bar, float32 on the CPU, timm's
# test ConvNeXt (a test that needs ConvNeXt-V2's own layers or capacity names convnextv2_atto).
ATTO = "model.name=convnextv2_atto"
SHRINK = [
    "dataset.image_size=32",
    "dataset.num_workers=0",
    "trainer.epochs=1",
    "trainer.progress=false",
    "trainer.device=cpu",
    "model.name=test_convnext2",  # timm's own test ConvNeXt: 0.35M parameters, 12x faster than atto
    "trainer.report=false",  # the HTML report: tests/test_report.py
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def compose_config(overrides: Sequence[str] = (), shrink: bool = True) -> DictConfig:
    """The real configs/train.yaml composed with ``overrides`` (after the shrinking ones)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=[*(SHRINK if shrink else []), *overrides])


@pytest.fixture(scope="session")
def digits_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the built-in digits, shared by the whole session."""
    return tmp_path_factory.mktemp("digits_cache")


@pytest.fixture
def cfg_factory(digits_cache: Path) -> Callable[..., DictConfig]:
    """Compose the config; digits go to the session's cache instead of the project's .cache/."""

    def make(*overrides: str) -> DictConfig:
        cfg = compose_config(overrides)
        if OmegaConf.get_type(cfg.dataset) is DigitsSettings and cfg.dataset.root is None:
            with open_dict(cfg):
                cfg.dataset.root = str(digits_cache)
        return cfg

    return make


def write_image(path: Path, rng: np.random.Generator, mode: str = "RGB", size: int = 20) -> None:
    """A random image of ``mode`` (RGB, L, RGBA, P, CMYK, ...) saved to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    img = Image.fromarray(pixels, mode="RGB")
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)


def write_truncated(path: Path, rng: np.random.Generator | None = None) -> None:
    """An image whose header opens (so it is listed and counted) but whose pixels are cut off: found
    unreadable only when it is decoded."""
    write_image(path, rng or np.random.default_rng(0), size=64)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def make_tree(
    root: Path,
    counts: dict[str, tuple[int, int]],
    seed: int = 0,
    modes: Sequence[str] = ("RGB",),
    ext: str = ".png",
) -> Path:
    """``root/train/<class>`` and ``root/valid/<class>`` with counts[class] = (train, valid) images."""
    rng = np.random.default_rng(seed)
    for name, (n_train, n_val) in counts.items():
        for split, n in (("train", n_train), ("valid", n_val)):
            for i in range(n):
                mode = modes[i % len(modes)]
                file_ext = ".jpg" if mode == "CMYK" else ext
                write_image(root / split / name / f"{i:03d}{file_ext}", rng, mode)
    return root


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """An imbalanced 3-class tree of 23 training images (an odd last batch at batch size 4)."""
    return make_tree(tmp_path / "images", {"cat": (12, 4), "dog": (7, 4), "fox": (4, 4)})


def evaluate_single_process(run: Path, output_dir: Path) -> dict:
    """scripts/evaluate.py of ``run``'s last.pt in one process on the CPU: its metrics.json."""
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "evaluate.py"),
            f"checkpoint={run}/checkpoints/last.pt",
            f"output_dir={output_dir}",
            "device=cpu",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads((output_dir / "metrics.json").read_text())
