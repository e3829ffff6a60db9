"""Under DDP, whether every rank ends training with the same weights.

DDP keeps replicas equal only as long as every rank takes the same steps from the same start:
a rank that skipped an update, a parameter outside the gradient reducer, or a buffer that each
rank changes on its own (BatchNorm statistics without ``trainer.sync_bn``) leaves the ranks apart,
and rank 0's checkpoint then stands for one replica only. At the end of training every rank
hashes its model's parameters and buffers (the EMA follows from them); rank 0 gathers the hashes
and says, in train.log, that they agree or which ranks differ. It costs one pass over the weights.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from common.dist import Dist
from trainer.distributed import gather_objects
from trainer.hooks.base import Hook

log = logging.getLogger("trainer.trainer")


def weights_digest(tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """A hash of named tensors' exact bytes (a one-bit difference changes it)."""
    digest = hashlib.sha256()
    for name, tensor in tensors:
        digest.update(name.encode())
        flat = tensor.detach().reshape(-1).contiguous().cpu()
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


class RanksAgree(Hook):
    """At the end of a DDP fit: rank 0 says whether all ranks hold the same weights."""

    def __init__(self, model: nn.Module, dist: Dist) -> None:
        self.model, self.dist = model, dist

    def on_fit_end(self, best_epoch: int | None, main: bool) -> dict[str, Any]:
        mine = weights_digest(self.model.state_dict().items())
        every = gather_objects(mine, self.dist)
        if main:
            apart = [rank for rank, theirs in enumerate(every) if theirs != mine]
            if apart:
                log.warning(
                    "DDP: rank(s) %s end with other weights than rank 0, whose checkpoints hold one "
                    "replica only (a buffer each rank changes on its own, such as BatchNorm statistics "
                    "without trainer.sync_bn=true, is a common cause).",
                    ", ".join(map(str, apart)),
                )
            else:
                count = self.dist.world_size
                log.info("DDP: all %d ranks end with identical weights (sha256 %s)", count, mine[:16])
        return {}
