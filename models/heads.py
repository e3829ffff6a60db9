"""The classifier and what acts on its class rows: a cosine head, tau-normalisation, MaxNorm,
learnable weight scaling (each function cites its paper).

The cosine head: logits are s times the cosines between the normalised feature and the class
weights.

LDAM (Cao et al., NeurIPS 2019, "Learning Imbalanced Datasets with Label-Distribution-Aware
Margin Loss") scales cosines by s=30 before the softmax; on raw linear logits that can diverge,
so the reference code pairs it with this head ("NormedLinear"). The scale belongs to the head
(a buffer, saved with the weights), so the model's output is what the softmax of training saw:
softmax of it is the model's probability wherever it is used (validation loss, evaluate.py,
predict.py, the exported model), and LDAM subtracts margins in the same units, s * m_j.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError

HEADS = ("linear", "cosine")


DEFAULT_SCALE = 30.0  # LDAM's reference value


class CosineClassifier(nn.Module):
    """``scale * normalize(x) @ normalize(W).T``: (N, in_features) -> (N, num_classes), values in
    [-scale, scale]."""

    def __init__(self, in_features: int, num_classes: int, scale: float = DEFAULT_SCALE) -> None:
        super().__init__()
        if not scale > 0:
            raise ValueError(f"model.cosine_scale={scale} must be positive (30 in LDAM's reference code)")
        self.in_features = in_features
        self.out_features = num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Linear's initialisation
        self.register_buffer("scale", torch.tensor(float(scale)))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Weights saved before the scale was part of the head keep the scale this head was built
        # with (model_from_checkpoint builds it with the one training used).
        state_dict.setdefault(prefix + "scale", self.scale.clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, scale={self.scale.item():g}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 even under autocast: cosines are later scaled by s (30 for LDAM), which would
        # magnify fp16's rounding of values in [-1, 1] to a visible logit error.
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = F.normalize(x.float(), dim=-1)
            w = F.normalize(self.weight.float(), dim=-1)
            return self.scale * (x @ w.t())  # (N, C)


def replace_classifier(model: nn.Module, classifier_name: str, num_classes: int, scale: float) -> None:
    """Swap the final linear layer named ``classifier_name`` (e.g. ``head.fc``) for a cosine head."""
    old = model.get_submodule(classifier_name)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"{classifier_name} is a {type(old).__name__}, not nn.Linear")
    model.set_submodule(classifier_name, CosineClassifier(old.in_features, num_classes, scale))


def tau_normalise(model: nn.Module, classifier_names: tuple[str, ...], tau: float) -> str:
    """tau-normalisation (Kang et al., ICLR 2020, "Decoupling Representation and Classifier for
    Long-Tailed Recognition"): each class's classifier row w_c divided by ||w_c||^tau, in place.

    No training: a head that learned larger norms for its frequent classes favours them; tau 1
    equalises the norms, tau 0 changes nothing. A class's bias is divided with its row (as if it
    were the row's last weight), so the logit of every class is scaled by the same factor as its
    weights. A cosine head normalises its rows itself: nothing to do (said). Returns what was done.
    """
    done = []
    for name in classifier_names:
        head = model.get_submodule(name)
        if isinstance(head, CosineClassifier):
            done.append(
                f"{name}: a cosine head, whose rows are normalised already (tau-norm changes nothing)"
            )
            continue
        if not isinstance(head, nn.Linear):
            raise ValueError(
                f"tau_norm: the classifier {name} is a {type(head).__name__}, not a linear layer"
            )
        with torch.no_grad():
            norms = head.weight.norm(dim=1).clamp_min(1e-12)
            scale = norms**tau  # (C,)
            rows = head.weight / scale[:, None]
            if not (torch.isfinite(rows).all() and (rows.norm(dim=1) > 0).all()):
                raise UserError(
                    f"tau_norm={tau:g} turns the classifier's rows (norms {norms.min():.3g} to "
                    f"{norms.max():.3g}) into infinities or zeros in {rows.dtype}: every logit would be "
                    f"NaN. Use a power between 0 and about 2 (1 equalises the norms)."
                )
            head.weight.copy_(rows)
            if head.bias is not None:
                head.bias.div_(scale)
        done.append(f"{name}: rows divided by their norm to the power {tau:g}")
    return "; ".join(done)


def cap_row_norms(model: nn.Module, classifier_names: tuple[str, ...], max_norm: float) -> None:
    """MaxNorm (Alshammari et al., CVPR 2022, "Long-Tailed Recognition via Weight Balancing"): each
    class's classifier row projected back into the ball of radius ``max_norm`` after an update
    (projected gradient descent): small rows may grow, none beyond the cap."""
    with torch.no_grad():
        for name in classifier_names:
            weight = model.get_submodule(name).weight  # (C, D)
            norms = weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
            weight.mul_(torch.clamp(max_norm / norms, max=1.0))


def relative_cap(model: nn.Module, classifier_names: tuple[str, ...], fraction: float) -> float:
    """The MaxNorm cap of Alshammari et al.'s code: ``fraction`` of the way from the smallest class
    row norm of the classifier as it starts to the largest (0.1 in their second stage)."""
    norms = torch.cat([model.get_submodule(n).weight.detach().float().norm(dim=1) for n in classifier_names])
    low, high = float(norms.min()), float(norms.max())
    return low + fraction * (high - low)


def scale_logits(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return output * module.class_scale


def add_class_scales(model: nn.Module, classifier_names: tuple[str, ...]) -> None:
    """Learnable weight scaling (LWS; Kang et al., ICLR 2020, "Decoupling Representation and
    Classifier for Long-Tailed Recognition"; MiSLAS's stage 2, Zhong et al., CVPR 2021): each
    class's logit times a learned scale f_c, starting at 1, while the classifier's own weights stay
    frozen (``train_class_scales_only``), so only the C scales re-balance the classes. The scale is
    the classifier's parameter ``class_scale``, saved with it; a forward hook applies it, so timm's
    head, a cosine head, DataParallel replicas, EMA copies and the exported graph all see it."""
    for name in classifier_names:
        head = model.get_submodule(name)
        head.register_parameter("class_scale", nn.Parameter(torch.ones(head.out_features)))
        head.register_forward_hook(scale_logits)


def train_class_scales_only(model: nn.Module, classifier_names: tuple[str, ...]) -> None:
    """LWS trains the scales: every other parameter of the classifier freezes."""
    for name in classifier_names:
        for key, parameter in model.get_submodule(name).named_parameters():
            parameter.requires_grad_(key == "class_scale")
