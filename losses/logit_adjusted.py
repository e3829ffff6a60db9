"""Logit-adjusted cross-entropy (Menon et al., ICLR 2021, "Long-Tail Learning via Logit
Adjustment"), equal to Balanced Softmax (Ren et al., NeurIPS 2020) at tau = 1.

Training adds tau * log(prior) to the logits inside the loss, with the prior pi_c = n_c / n from
the training counts:
    CE(z + tau * log pi, y).
The rare classes get a larger margin, in the same spirit as LDAM but with margins that are the
Bayes-consistent correction of the label shift between the long-tailed training distribution
and a balanced test one. The model's own outputs stay the unadjusted z: a model trained this
way already predicts argmax z as a classifier for balanced classes, so prediction, evaluation
and export need no further work (adding the prior back would undo the training).

At tau = 0 the loss is exactly cross-entropy. Index and soft targets (Mixup/CutMix, label
smoothing), class weights and deferred re-weighting come from ``losses.base``; computed in
float32, also under autocast. Post-hoc adjustment of a plain cross-entropy model is the same
correction applied at prediction time instead: ``adjust_logits`` with a negative sign.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from losses.cross_entropy import CrossEntropyLoss
from losses.weights import WeightSpec


def log_prior(cls_num_list: Sequence[int]) -> torch.Tensor:
    """log(n_c / n) of the training counts: shape (C,), float32."""
    counts = torch.as_tensor(cls_num_list, dtype=torch.float64)
    if counts.numel() == 0 or bool((counts <= 0).any()):
        raise ValueError(f"every class needs at least one training image, got counts {list(cls_num_list)}")
    return (counts / counts.sum()).log().float()


def adjust_logits(logits: torch.Tensor, cls_num_list: Sequence[int], tau: float) -> torch.Tensor:
    """Post-hoc logit adjustment: z - tau * log(prior), (N, C) -> (N, C) float32.

    The argmax of the result is the balanced-error classifier of a model trained with plain
    cross-entropy on the long-tailed counts (Menon et al., ICLR 2021, section 4).
    """
    return logits.float() - tau * log_prior(cls_num_list).to(logits.device)


class LogitAdjustedLoss(CrossEntropyLoss):
    """Cross-entropy of z + tau * log(prior); tau = 1 is Balanced Softmax, tau = 0 plain CE."""

    def __init__(
        self,
        cls_num_list: Sequence[int],
        tau: float = 1.0,
        class_weights: WeightSpec = None,
        label_smoothing: float = 0.0,
        drw_epoch: int | None = None,
        beta: float = 0.9999,
    ) -> None:
        super().__init__(cls_num_list, class_weights, label_smoothing, drw_epoch, beta)
        if not tau >= 0:
            raise ValueError(f"loss.tau={tau} must be >= 0 (0 is plain cross-entropy, 1 the usual choice)")
        self.tau = tau
        self.register_buffer("log_prior", log_prior(cls_num_list))

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # logits are float32 here: fp16 would round the rare classes' large log-priors
        return super().loss(logits + self.tau * self.log_prior, target)
