"""Models: timm classifiers with our class count, local weights and an optional cosine head."""

from models.factory import create_model, model_from_checkpoint
from models.heads import CosineClassifier

__all__ = ["CosineClassifier", "create_model", "model_from_checkpoint"]
