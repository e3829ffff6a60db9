"""The moments of the loop at which an optional behaviour runs, and the fan-out over several.

A behaviour subclasses ``Hook`` and overrides the moments it needs; the others do nothing. The
loop holds one ``Hooks`` and calls it at each moment, on every rank (DDP ranks must take the same
steps), in the order the hooks were given. What a hook needs of the run (the model, the class
names, the loss) it is given when built (``trainer.hooks.chosen.choose_hooks``), not by reaching into
the loop.

Checkpointing is no hook: resume, signals and the end of training depend on it, so the loop
owns it. SAM is no hook either: it replaces the step's backward pass (a second forward and
backward at perturbed weights), which is the step's own work, not a moment around it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from trainer.evaluation.gallery import Predictions
    from trainer.evaluation.metrics import Evaluation
    from trainer.progress import Progress
    from trainer.results import TrainStats


@dataclass
class EpochEnd:
    """One epoch, trained and validated, as the hooks see it before it is recorded."""

    epoch: int
    train: TrainStats
    results: dict[str, Evaluation]  # per model: val, and val_ema with EMA
    main: bool  # rank 0, the one that writes and speaks
    pictures: dict[str, Any] = field(default_factory=dict)  # model -> a picture for the loggers
    improved: bool = False  # the monitored metric's best so far: best.pt holds this epoch


class Hook:
    """One optional behaviour of the loop; every moment does nothing unless overridden."""

    def on_epoch_start(self, epoch: int, say: bool) -> None:
        """Before epoch ``epoch`` (counted from 1) trains, the model in train mode; ``say``: rank 0."""

    def on_gradients(self) -> None:
        """An update's gradients are complete: before unscaling, clipping and the optimizer step
        (and before SAM's ascent, which must not move what this drops)."""

    def on_update(self) -> None:
        """After each optimizer step."""

    def watch_validation(
        self, prefix: str, epoch: int, size: int, device: torch.device
    ) -> Predictions | None:
        """A collector of each image's prediction for this validation pass, or None."""
        return None

    def on_validation_end(self, end: EpochEnd) -> None:
        """After the epoch's validation, before it is recorded and checkpointed."""

    def stop_reason(self, progress: Progress) -> str | None:
        """Why training stops after ``progress.epoch`` before its last epoch, or None to go on."""
        return None

    def on_fit_end(self, best_epoch: int | None, main: bool) -> dict[str, Any]:
        """Training has ended (every rank); pictures of the run as best.pt presents it, by name."""
        return {}


class Hooks(Hook):
    """Several hooks called in turn as one."""

    def __init__(self, hooks: list[Hook] | tuple[Hook, ...] = ()) -> None:
        self.hooks = list(hooks)

    def of_type(self, kind: type[Hook]) -> Hook | None:
        return next((hook for hook in self.hooks if isinstance(hook, kind)), None)

    def on_epoch_start(self, epoch: int, say: bool) -> None:
        for hook in self.hooks:
            hook.on_epoch_start(epoch, say)

    def on_gradients(self) -> None:
        for hook in self.hooks:
            hook.on_gradients()

    def on_update(self) -> None:
        for hook in self.hooks:
            hook.on_update()

    def watch_validation(
        self, prefix: str, epoch: int, size: int, device: torch.device
    ) -> Predictions | None:
        watches = (hook.watch_validation(prefix, epoch, size, device) for hook in self.hooks)
        return next((watch for watch in watches if watch is not None), None)

    def on_validation_end(self, end: EpochEnd) -> None:
        for hook in self.hooks:
            hook.on_validation_end(end)

    def stop_reason(self, progress: Progress) -> str | None:
        reasons = (hook.stop_reason(progress) for hook in self.hooks)
        return next((reason for reason in reasons if reason), None)

    def on_fit_end(self, best_epoch: int | None, main: bool) -> dict[str, Any]:
        pictures: dict[str, Any] = {}
        for hook in self.hooks:
            pictures |= hook.on_fit_end(best_epoch, main)
        return pictures
