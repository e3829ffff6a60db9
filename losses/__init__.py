"""Losses for imbalanced classification: cross-entropy, logit-adjusted, LDAM(-DRW) and focal,
hard or soft targets."""

from losses.cross_entropy import CrossEntropyLoss
from losses.focal import FocalLoss
from losses.ldam import LDAMLoss
from losses.logit_adjusted import LogitAdjustedLoss, adjust_logits
from losses.weights import effective_number_weights

__all__ = [
    "CrossEntropyLoss",
    "FocalLoss",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "adjust_logits",
    "effective_number_weights",
]
