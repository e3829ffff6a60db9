"""A RAF-DB-like class distribution and a batch of logits and labels for the loss tests."""

from __future__ import annotations

import torch

COUNTS = [500, 200, 80, 30, 29, 12, 30]  # RAF-DB-like: 7 classes, largest about 40x smallest


C = len(COUNTS)


def batch(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, C, generator=g) * 2
    target = torch.randint(0, C, (n,), generator=g)
    soft = torch.softmax(torch.randn(n, C, generator=g) * 3, dim=1)
    return logits, target, soft
