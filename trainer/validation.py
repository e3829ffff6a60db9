"""One validation pass of a model of the run: every image of the validation split (or of a test
loader) once, in eval mode, through the run's metrics (``trainer.evaluation.metrics``) on its
device and precision; a hook may watch each image's prediction (the error gallery)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from trainer.config import TrainerConfig
from trainer.console import on_terminal
from trainer.evaluation.gallery import Predictions
from trainer.evaluation.metrics import ClassificationMetrics, Evaluation, ShotThresholds, evaluate_model

Watch = Callable[[str, int, int, torch.device], Predictions | None]  # (model, epoch, images, device)


class Validator:
    """Validates models on ``loader`` with metrics that know the training ``class_counts``."""

    def __init__(
        self,
        loader: Any,
        class_counts: Sequence[int],
        config: TrainerConfig,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        shown: bool,
        watch: Watch | None = None,
    ) -> None:
        self.loader, self.device, self.amp_dtype, self.watch = loader, device, amp_dtype, watch
        self.channels_last = config.channels_last
        self.bars = shown and config.progress and on_terminal()  # a progress bar named val, val_ema
        shots = ShotThresholds(many=config.many_shot, few=config.few_shot)
        self.metrics = ClassificationMetrics(
            len(class_counts), device, class_counts, shots, posthoc_tau=config.posthoc_tau
        )

    def __call__(self, model: nn.Module, name: str, epoch: int) -> Evaluation:
        """Loss (plain cross-entropy) and metrics of ``model`` on the whole validation set."""
        size = len(self.loader.loader.dataset)
        watch = self.watch(name, epoch, size, self.device) if self.watch is not None else None
        return self.on(self.loader, model, name, watch)

    def on(
        self, loader: Any, model: nn.Module, name: str = "test", watch: Predictions | None = None
    ) -> Evaluation:
        """``model``'s metrics on ``loader`` (every rank its share; the counts summed across ranks)."""
        bar = name if self.bars else None
        return evaluate_model(
            model, loader, self.metrics, self.device, self.amp_dtype, self.channels_last, bar, watch
        )
