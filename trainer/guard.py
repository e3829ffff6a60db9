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

SAM_RHO_USUAL = 2.0  # SAM's radius: 0.05 in Foret et al.; adaptive SAM's 0.5 to 2


class NonFiniteGuard:
    """Counts consecutive non-finite losses of one epoch on ``device``; ``check`` raises."""

    def __init__(self, device: torch.device, limit: int, dist: Dist, sam_rho: float = 0.0) -> None:
        self.limit, self.dist, self.sam_rho = limit, dist, sam_rho
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
            f"training stopped and {saved}. {self.advice()}"
        )

    def advice(self) -> str:
        """What to change: a SAM radius far beyond its usual range first, else the usual suspects."""
        usual = "lower optimizer.lr, set trainer.clip_grad (e.g. 5.0), or try trainer.amp_dtype=bfloat16"
        if self.sam_rho > SAM_RHO_USUAL:
            return (
                f"optimizer.sam.rho={self.sam_rho:g} moves the weights far before each gradient (SAM's "
                f"radius is usually 0.05, at most about 2): lower it; if that is not it, {usual}."
            )
        smaller_rho = f", or try a smaller optimizer.sam.rho (now {self.sam_rho:g})" if self.sam_rho else ""
        return f"{usual[0].upper()}{usual[1:]}{smaller_rho}."
