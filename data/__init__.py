"""Datasets: ImageFolder trees, the built-in long-tailed digits, RAF-DB."""

from data.digits import DigitsData
from data.folders import ImageFolderData
from data.rafdb import RafDBData

__all__ = ["DigitsData", "ImageFolderData", "RafDBData"]
