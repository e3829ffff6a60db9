"""The non-finite guard: a run whose loss stays NaN or infinite stops with a message, never saves.

Each step's loss is checked on the device (no host sync); the count of consecutive non-finite
losses is read only where the loop syncs anyway (the progress bar, a checkpoint). Under fp16 with
a GradScaler a few such steps in a row are the scaler's normal skips (it lowers its scale and
skips the step), so up to ``limit`` are tolerated; without loss scaling, none.
"""

from __future__ import annotations

import torch

from common.dist import Dist
from common.errors import NonFiniteLossError
from common.run_folder import LAST_SHOWN


class NonFiniteGuard:
    """Counts consecutive non-finite losses of one epoch on ``device``; ``check`` raises."""

    def __init__(self, device: torch.device, limit: int, dist: Dist) -> None:
        self.limit, self.dist = limit, dist
        self.streak = torch.zeros((), dtype=torch.long, device=device)  # consecutive non-finite losses
        self.fault_step = torch.full((), -1, dtype=torch.long, device=device)  # first step past the limit

    def observe(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        """Note step ``step``'s loss; whether it is finite (a device tensor)."""
        finite = torch.isfinite(loss)
        self.streak = (self.streak + 1) * ~finite
        past = (self.streak > self.limit) & (self.fault_step < 0)
        self.fault_step = torch.where(past, step, self.fault_step)
        return finite

    def check(self, epoch: int, lr: float, saved_epoch: int) -> None:
        """Stop with a clear message once the loss stayed non-finite (one host sync)."""
        if self.dist.enabled:  # every rank stops together, or the others would wait forever
            torch.distributed.all_reduce(self.fault_step, op=torch.distributed.ReduceOp.MAX)
        step = int(self.fault_step.item())
        if step < 0:
            return
        saved = (
            f"{LAST_SHOWN} still holds epoch {saved_epoch}" if saved_epoch else "no checkpoint was written"
        )
        raise NonFiniteLossError(
            f"The training loss became NaN or infinite at epoch {epoch}, step {step} (lr {lr:.3g}); "
            f"training stopped and {saved}. Lower optimizer.lr, set trainer.clip_grad (e.g. 5.0), or "
            f"try trainer.amp_dtype=bfloat16."
        )
