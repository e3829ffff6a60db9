"""Temperature scaling (Guo et al., ICML 2017, "On Calibration of Modern Neural Networks").

A classifier trained with margins (LDAM) or on few images is often over-confident: its top-1
probability exceeds its accuracy. One scalar T, fitted on held-out data by minimising the
negative log-likelihood of softmax(z / T), corrects that without changing any prediction
(argmax is unchanged). ``evaluate.py calibrate=true`` fits T on the validation split and
stores it in the checkpoint (``calibration``: one entry for the raw and one for the EMA
weights); predict.py, evaluate.py and export.py then use softmax(z / T) as the probability.

The numbers reported after calibration are cross-fitted: T fitted on one half of the split is
scored on the other half and vice versa, so they are not flattered by fitting and scoring on
the same images; the stored T is fitted on the whole split.
"""

from __future__ import annotations

from typing import Any, TypedDict

import torch
import torch.nn.functional as F
from torch import nn

from losses.logit_adjusted import log_prior

ECE_BINS = 15  # Guo et al.'s choice


class Calibration(TypedDict):
    """What a checkpoint records of its calibration (key ``calibration``)."""

    temperature: float
    fitted_on: str  # the data the temperature was fitted on
    images: int
    nll_before: float
    nll_after: float  # cross-fitted
    ece_before: float
    ece_after: float  # cross-fitted


def calibration_gaps(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per confidence bin, the number of correct top-1 predictions minus the sum of their
    confidences: (ECE_BINS + 1,) float64. The bins are torchmetrics': [k/15, (k+1)/15), and a
    last one for a confidence of exactly 1. The ECE is the sum of their magnitudes over the
    number of images (the mean |accuracy - confidence| of a bin, weighted by its share)."""
    confidence, predicted = probs.float().max(dim=1)  # (N,)
    edges = torch.linspace(0, 1, ECE_BINS + 1, device=probs.device)
    bins = torch.bucketize(confidence, edges, right=True) - 1
    gap = predicted.eq(target).double() - confidence.double()
    return torch.zeros(ECE_BINS + 1, dtype=torch.float64, device=probs.device).index_add_(0, bins, gap)


def expected_calibration_error(logits: torch.Tensor, target: torch.Tensor) -> float:
    """ECE of softmax(logits) over ``ECE_BINS`` equal-width confidence bins."""
    gaps = calibration_gaps(logits.float().softmax(dim=1), target)
    return gaps.abs().sum().item() / max(target.numel(), 1)


def fit_temperature(logits: torch.Tensor, target: torch.Tensor) -> float:
    """The T > 0 that minimises the NLL of softmax(logits / T), by L-BFGS on log T."""
    logits = logits.detach().double()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), target)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.exp().item())


def calibrate(logits: torch.Tensor, target: torch.Tensor, fitted_on: str, seed: int = 0) -> Calibration:
    """T fitted on all of (logits, target); NLL and ECE before, and after by two-fold cross-fitting."""
    n = target.numel()
    if n < 20:
        raise ValueError(f"{n} images are too few to fit a temperature; use a split of at least 20")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    halves = (order[: n // 2], order[n // 2 :])
    scaled = torch.empty_like(logits, dtype=torch.float64)
    for fit, score in (halves, halves[::-1]):
        scaled[score] = logits[score].double() / fit_temperature(logits[fit], target[fit])
    return Calibration(
        temperature=fit_temperature(logits, target),
        fitted_on=fitted_on,
        images=n,
        nll_before=F.cross_entropy(logits.double(), target).item(),
        nll_after=F.cross_entropy(scaled, target).item(),
        ece_before=expected_calibration_error(logits, target),
        ece_after=expected_calibration_error(scaled, target),
    )


def temperature_of(state: dict[str, Any], ema: bool) -> float:
    """The temperature fitted for the checkpoint's raw (``model``) or EMA weights; 1.0 if never."""
    calibration = state.get("calibration", {}).get("ema" if ema else "model")
    return float(calibration["temperature"]) if calibration else 1.0


class Deployed(nn.Module):
    """``model`` as the scripts use it: logits z / T - tau * log(prior), whose softmax is the
    calibrated (and, with tau, post-hoc logit-adjusted: Menon et al., ICLR 2021) probability."""

    def __init__(
        self, model: nn.Module, temperature: float = 1.0, adjust: tuple[list[int], float] | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.temperature = temperature
        counts, tau = adjust if adjust is not None else (None, 0.0)
        offset = tau * log_prior(counts) if counts is not None else torch.zeros(())
        self.register_buffer("offset", offset.float())

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        """The deployed logits from the model's own."""
        return logits.float() / self.temperature - self.offset

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.outputs(self.model(images))
