"""CUDA-only paths: fp16 with GradScaler, bf16, channels_last, torch.compile, DataParallel, losses on GPU."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from losses import LDAMLoss
from train import train

pytestmark = pytest.mark.gpu
TREE = ["dataset=imagefolder", "dataset.batch_size=4", "trainer.device=cuda", "trainer.progress=false"]


def test_ldam_moves_to_cuda_and_replicates_under_data_parallel():
    counts = [100, 40, 10]
    criterion = LDAMLoss(counts, weight="balanced").to("cuda")
    assert criterion.margins.is_cuda and criterion.class_weight.is_cuda
    logits = torch.randn(6, 3, device="cuda")
    target = torch.tensor([0, 1, 2, 0, 1, 2], device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        loss = criterion(logits.half(), target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    soft = F.one_hot(target, 3).float()
    assert torch.allclose(criterion(logits, soft), criterion(logits, target))
    replicas = torch.nn.parallel.replicate(criterion, list(range(torch.cuda.device_count())))
    assert all(r.margins.device.index == i for i, r in enumerate(replicas))


@pytest.mark.parametrize(
    "extra",
    [
        ["trainer.amp=true", "trainer.amp_dtype=float16", "trainer.clip_grad=5.0", "trainer.compile=false"],
        [
            "trainer.amp=true",
            "trainer.amp_dtype=bfloat16",
            "trainer.channels_last=true",
            "trainer.compile=false",
        ],
        ["trainer.compile=auto", "trainer.channels_last=true"],  # the default: compiled on CUDA
        ["trainer.data_parallel=true", "trainer.amp=true", "trainer.compile=false"],
    ],
    ids=["fp16-scaler-clip", "bf16-channels-last", "compile", "data-parallel"],
)
def test_cuda_training_paths(cfg_factory, image_tree, tmp_path, extra, caplog):
    cfg = cfg_factory(
        *TREE, f"dataset.root={image_tree}", "loss=ldam", "mixup=default", "trainer.epochs=2", *extra
    )
    with caplog.at_level(logging.INFO):
        train(cfg, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 2
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in state["model"])
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    if "trainer.compile=auto" in extra:
        assert "torch.compile (trainer.compile=auto)" in caplog.text
        assert "torch.compile failed" not in caplog.text
    if "trainer.amp_dtype=float16" in extra:
        assert state["scaler"] is not None and state["scaler"]["scale"] > 0
