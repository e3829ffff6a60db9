"""A cosine classifier head: logits are cosines between the normalised feature and class weights.

LDAM (Cao et al., NeurIPS 2019, "Learning Imbalanced Datasets with Label-Distribution-Aware
Margin Loss") scales logits by s=30 before the softmax; on raw linear logits that can diverge,
so the reference code pairs it with this head ("NormedLinear"): outputs lie in [-1, 1] and the
margins and the scale s act on a bounded quantity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HEADS = ("linear", "cosine")


class CosineClassifier(nn.Module):
    """``normalize(x) @ normalize(W).T``: (N, in_features) -> (N, num_classes), values in [-1, 1]."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Linear's initialisation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 even under autocast: cosines are later scaled by s (30 for LDAM), which would
        # magnify fp16's rounding of values in [-1, 1] to a visible logit error.
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = F.normalize(x.float(), dim=-1)
            w = F.normalize(self.weight.float(), dim=-1)
            return x @ w.t()  # (N, C)


def replace_classifier(model: nn.Module, classifier_name: str, num_classes: int) -> None:
    """Swap the final linear layer named ``classifier_name`` (e.g. ``head.fc``) for a cosine head."""
    old = model.get_submodule(classifier_name)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"{classifier_name} is a {type(old).__name__}, not nn.Linear")
    model.set_submodule(classifier_name, CosineClassifier(old.in_features, num_classes))
