"""The Trainer's own settings, validated before any data is read.

Hydra types ``configs/trainer/*.yaml`` by it (and ``configs/dataset/*.yaml`` by the dataset
settings) once ``trainer.shell.registry.register_configs`` is called; ``OmegaConf.to_object``
builds it, and every bad value raises UserError naming the key and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.dist import launched_by_torchrun
from common.errors import UserError
from trainer.results import monitorable

DEVICES = ("auto", "cpu", "cuda")
AMP_DTYPES = ("float16", "bfloat16")
MONITOR_MODES = ("max", "min")
COMPILE_CHOICES = ("auto", "true", "false")


@dataclass
class EMAConfig:
    """Exponential moving average of the weights (timm's ModelEmaV3)."""

    enabled: bool = True
    decay: float = 0.9998
    # Warm-up: decay rises as 1 - (1 + step)^(-2/3) up to ``decay``, so short runs get a useful
    # average instead of one stuck near the initial weights.
    warmup: bool = True
    # Update the average every N optimizer steps, with the decay of N steps (decay ** N): on a
    # GPU at small batches the per-step update of a large model's copy costs a sizeable share.
    every_steps: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.decay < 1.0:
            raise UserError(f"trainer.ema.decay={self.decay} must lie in (0, 1), e.g. 0.9998.")
        if self.every_steps < 1:
            raise UserError(
                f"trainer.ema.every_steps={self.every_steps} must be a positive integer (1: each step)."
            )


@dataclass
class EarlyStoppingConfig:
    """Stop after ``patience`` epochs in which ``trainer.monitor`` did not improve on its best by
    more than ``min_delta`` (None: never stop early)."""

    patience: int | None = None
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.patience is not None and self.patience < 1:
            raise UserError(
                f"trainer.early_stopping.patience={self.patience} must be a positive number of epochs, "
                f"or null for no early stopping."
            )
        if not self.min_delta >= 0:
            raise UserError(f"trainer.early_stopping.min_delta={self.min_delta} must be >= 0.")


@dataclass
class TrainerConfig:
    """How to train: epochs, device, precision, EMA, clipping, wrapping, what 'best' means, logging."""

    epochs: int = 10
    device: str = "auto"  # auto: CUDA when available, else CPU
    amp: bool = True  # mixed precision on CUDA; on a CPU only with amp_dtype=bfloat16
    amp_dtype: str = "float16"  # float16 (with a GradScaler) or bfloat16
    clip_grad: float | None = None  # max gradient norm; None: no clipping
    # gradient accumulation: one optimizer update per K batches, with the mean of their gradients
    # (batch B with K steps trains like batch K*B); a shorter last group of an epoch updates too
    accumulate_steps: int = 1
    ema: EMAConfig = field(default_factory=EMAConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    data_parallel: bool = False  # DataParallel over all visible GPUs when there are several
    channels_last: bool = False  # NHWC memory layout (faster convolutions on recent GPUs)
    num_threads: int | None = None  # torch CPU threads; None: the cores left by the loader workers (logged)
    sync_bn: bool = False  # under DDP: BatchNorm statistics over all ranks (for models with BatchNorm)
    # torch.compile the training model (EMA and checkpoints unaffected); auto: on CUDA, without
    # DataParallel. If compiling fails, the run says why once and trains uncompiled.
    compile: str = "auto"
    monitor: str = "val/balanced_acc"  # the metric that chooses best.pt (val/acc, val_ema/acc, ...)
    monitor_mode: str = "max"  # max | min
    # progress-bar refresh (at most this many steps apart, and at least 5 times an epoch): the only
    # host syncs of a training epoch
    log_every_steps: int = 20
    checkpoint_every_steps: int | None = None  # also write last.pt every N steps (resumes mid-epoch exactly)
    progress: bool = True  # the progress bar
    # Long-tail reporting: many-shot classes have more than many_shot training images, few-shot
    # fewer than few_shot (val/acc_many, val/acc_medium, val/acc_few).
    many_shot: int = 100
    few_shot: int = 20
    # val/balanced_acc_adjusted: balanced accuracy of argmax(z - tau * log prior); None: not reported
    posthoc_tau: float | None = 1.0
    # the error gallery (trainer.evaluation.gallery) every this many epochs and at the last; 0: never
    gallery_every: int = 5
    report: bool = True  # RUN/report.html at the end (reporting.page; scripts/report.py makes one later)

    def __post_init__(self) -> None:
        if isinstance(self.ema, dict):
            self.ema = EMAConfig(**self.ema)
        if isinstance(self.early_stopping, dict):
            self.early_stopping = EarlyStoppingConfig(**self.early_stopping)
        if self.epochs < 1:
            raise UserError(f"trainer.epochs={self.epochs} must be a positive integer.")
        if self.device not in DEVICES:
            raise UserError(f"trainer.device={self.device!r} is not one of: {', '.join(DEVICES)}.")
        self.compile = str(self.compile).lower()  # true and false arrive as booleans
        if self.compile not in COMPILE_CHOICES:
            raise UserError(f"trainer.compile={self.compile!r} is not one of: {', '.join(COMPILE_CHOICES)}.")
        if self.amp_dtype not in AMP_DTYPES:
            raise UserError(f"trainer.amp_dtype={self.amp_dtype!r} is not one of: {', '.join(AMP_DTYPES)}.")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise UserError(f"trainer.clip_grad={self.clip_grad} must be positive, or null for no clipping.")
        if self.monitor_mode not in MONITOR_MODES:
            raise UserError(f"trainer.monitor_mode={self.monitor_mode!r} is not one of: max, min.")
        allowed = monitorable(self.ema.enabled, self.posthoc_tau is not None)
        if self.monitor not in allowed:
            raise UserError(
                f"trainer.monitor={self.monitor!r} is never logged in this run; choose one of: "
                f"{', '.join(allowed)}."
            )
        if self.checkpoint_every_steps is not None and self.checkpoint_every_steps < 1:
            raise UserError(
                f"trainer.checkpoint_every_steps={self.checkpoint_every_steps} must be a positive "
                f"integer, or null for checkpoints at epoch ends only."
            )
        if self.accumulate_steps < 1:
            raise UserError(f"trainer.accumulate_steps={self.accumulate_steps} must be a positive integer.")
        if self.gallery_every < 0:
            raise UserError(
                f"trainer.gallery_every={self.gallery_every} must be a number of epochs, or 0 for no "
                f"error gallery."
            )
        every = self.checkpoint_every_steps
        if every is not None and every % self.accumulate_steps:
            raise UserError(
                f"trainer.checkpoint_every_steps={every} must be a multiple of trainer.accumulate_steps="
                f"{self.accumulate_steps}: a checkpoint is written between optimizer updates only."
            )
        if self.num_threads is not None and self.num_threads < 1:
            raise UserError(f"trainer.num_threads={self.num_threads} must be positive, or null to choose it.")
        if not 1 <= self.few_shot <= self.many_shot:
            raise UserError(
                f"trainer.few_shot={self.few_shot} and trainer.many_shot={self.many_shot}: need "
                f"1 <= few_shot <= many_shot (the literature's 20 and 100)."
            )
        if self.posthoc_tau is not None and not self.posthoc_tau >= 0:
            raise UserError(f"trainer.posthoc_tau={self.posthoc_tau} must be >= 0 (1.0 is usual), or null.")
        if self.log_every_steps < 1:
            raise UserError(f"trainer.log_every_steps={self.log_every_steps} must be a positive integer.")
        if self.data_parallel and launched_by_torchrun():
            raise UserError(
                "trainer.data_parallel=true under torchrun: each process already drives one GPU. "
                "Drop trainer.data_parallel (or launch with plain python for DataParallel on one machine)."
            )
