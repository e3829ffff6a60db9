"""Where and how a model runs: the device of this process, the autocast dtype, and the wrappers
(DistributedDataParallel under torchrun, DataParallel over several GPUs, torch.compile)."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch
from torch import nn

from common.dist import SINGLE, Dist
from common.errors import UserError
from trainer.config import DEVICES, TrainerConfig

log = logging.getLogger("trainer.trainer")


def check_device(name: str, key: str = "trainer.device") -> None:
    """Refuse an unknown device, or ``cuda`` where no GPU is visible (cheap: creates no CUDA context)."""
    if name not in DEVICES:
        raise UserError(f"{key}={name!r} is not one of: {', '.join(DEVICES)}.")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{key}=cuda, but no CUDA device is visible. Use {key}=auto or cpu.")


def resolve_device(name: str, dist: Dist = SINGLE) -> torch.device:
    """The device of this process: under DDP on CUDA, the GPU of its local rank."""
    check_device(name)
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", dist.local_rank if dist.enabled else torch.cuda.current_device())


def autocast_dtype(config: TrainerConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for float32; says once why AMP is off on a CPU."""
    if not config.amp:
        return None
    if device.type == "cpu" and config.amp_dtype == "float16":
        log.info(
            "AMP is off on the CPU: float16 autocast needs CUDA, and bfloat16 autocast is many times "
            "slower than float32 on CPUs without bf16 units. trainer.amp_dtype=bfloat16 forces it on."
        )
        return None
    return torch.float16 if config.amp_dtype == "float16" else torch.bfloat16


def place_model(model: nn.Module, config: TrainerConfig, device: torch.device, dist: Dist) -> nn.Module:
    """The raw model on ``device`` in the configured memory layout (before the optimizer exists,
    so its state is created alike), with SyncBatchNorm under DDP when asked."""
    if dist.enabled and config.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # batch statistics over all ranks
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    return model.to(device, memory_format=memory_format)


def no_sync(model: nn.Module, enabled: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` (gradients kept local: accumulated, all-reduced later) when ``enabled``
    and ``model`` is DDP, compiled or not; otherwise nothing."""
    ddp = getattr(model, "_orig_mod", model)
    if enabled and isinstance(ddp, nn.parallel.DistributedDataParallel):
        return ddp.no_sync()
    return contextlib.nullcontext()


def wrap_model(model: nn.Module, config: TrainerConfig, device: torch.device, dist: Dist) -> nn.Module:
    """DDP (under torchrun), DataParallel and torch.compile around the raw model, as configured."""
    if dist.enabled:
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    elif config.data_parallel:
        gpus = torch.cuda.device_count() if device.type == "cuda" else 0
        if gpus > 1:
            log.info("DataParallel over %d GPUs", gpus)
            model = nn.DataParallel(model)
        else:
            log.info("trainer.data_parallel=true, but %d GPU(s) visible: training unwrapped", gpus)
    # auto leaves DataParallel alone: its threads and replicas would break the graph apart
    auto = device.type == "cuda" and not isinstance(model, nn.DataParallel)
    if config.compile == "true" or (config.compile == "auto" and auto):
        log.info(
            "torch.compile (trainer.compile=%s): the first steps and validations compile, later ones "
            "run faster; trainer.compile=false trains uncompiled",
            config.compile,
        )
        model = CompiledOrEager(model)
    return model


class CompiledOrEager(nn.Module):
    """``torch.compile(model)``, or ``model`` itself once compiling has failed: torch compiles at
    the first call (and again for a new shape or mode), and a missing compiler or a backend error
    there is said once, as a warning, and the run goes on uncompiled instead of stopping."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._orig_mod = model  # torch.compile's name for it, which no_sync looks for
        self.__dict__["compiled"] = torch.compile(model)  # not a second registration of the weights
        self.failed = False

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.failed:
            try:
                return self.compiled(*args, **kwargs)
            except torch._dynamo.exc.BackendCompilerFailed as err:
                self.failed = True
                reason = str(err).strip().splitlines()[0][:300]
                log.warning(
                    "torch.compile failed, so training goes on uncompiled (trainer.compile=false skips "
                    "the attempt): %s",
                    reason,
                )
        return self._orig_mod(*args, **kwargs)
