"""RAF-DB, the Real-world Affective Faces database (Li, Deng and Du, CVPR 2017), basic emotions.

Seven classes of aligned 100x100 faces. The official labels are 1-7 in this order; some
redistributions name the class folders ``1`` to ``7``, others by emotion. Either way the
class names reported in logs, TensorBoard and checkpoints are the emotion names.
"""

from __future__ import annotations

from dataclasses import dataclass

from data.folders import ImageFolderData

EMOTIONS = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")


def emotion_name(folder: str) -> str:
    """The emotion of a class folder named ``1``-``7`` (official label) or by the emotion itself."""
    if folder.isdigit() and 1 <= int(folder) <= len(EMOTIONS):
        return EMOTIONS[int(folder) - 1]
    return folder


@dataclass
class RafDBData(ImageFolderData):
    """ImageFolderData whose class names are emotion names, whichever folder naming is on disk."""

    @property
    def class_names(self) -> list[str]:
        return [emotion_name(f) for f in self.folder_names]
