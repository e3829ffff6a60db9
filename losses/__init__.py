"""Losses for imbalanced classification: cross-entropy, LDAM(-DRW) and focal, hard or soft targets."""

from losses.cross_entropy import CrossEntropyLoss
from losses.focal import FocalLoss
from losses.ldam import LDAMLoss
from losses.weights import effective_number_weights

__all__ = ["CrossEntropyLoss", "FocalLoss", "LDAMLoss", "effective_number_weights"]
