"""TensorBoard: every scalar per epoch, the confusion pictures, the per-class layout and, at the
end, the HParams record (``trainer.loggers.hparams``), under ``RUN/tensorboard``; each tag in
the section ``trainer.results.board_tag`` gives it, so that the first screen shows what compares runs. Above
``DETAIL_CLASSES`` classes, the largest confusions as a table (Text tab) replace the picture. At
the end the Text tab also holds the best epoch's validation table and the run's settings.

On resume, ``purge_step`` drops the events of the epochs the run trains again, so no curve has an
epoch twice.

Without TensorFlow, TensorBoard checksums every record it writes (TFRecord's masked CRC-32C) in
pure Python, about 5 MB/s: an error gallery (about 1 MB) held the interpreter for 0.2 s, slowing
training on the other thread. ``fast_checksums`` gives its writer the same checksum from
google-crc32c's C code (the test compares both and reads the events back with TensorBoard).
"""

from __future__ import annotations

import google_crc32c
import numpy as np
from tensorboard.summary.writer import record_writer
from torch.utils.tensorboard import SummaryWriter

from common.nested import as_yaml
from common.run_folder import RunFolder
from trainer.evaluation.figures import confusion_image
from trainer.evaluation.reports import metrics_table, top_confusions
from trainer.loggers import hparams
from trainer.loggers.base import EpochRecord, RunInfo
from trainer.results import DETAIL_CLASSES, FitSummary, board_tag, monitored_model


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C of ``data``: the CRC rotated right by 15 bits plus a constant."""
    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def fast_checksums() -> None:
    """TensorBoard's record writer checksums with ``masked_crc32c`` (C) instead of Python's loop."""
    record_writer.masked_crc32c = masked_crc32c


def run_text(run: RunInfo, summary: FitSummary) -> dict[str, str]:
    """The Text tab's cards (Markdown): the best epoch with its validation table, as train.log ends,
    and the settings: the overrides typed and the resolved config."""
    cards = {}
    if summary.best is not None and summary.best_epoch is not None:
        prefix = monitored_model(summary.monitor)
        table = metrics_table(summary.best[prefix], summary.class_names)
        head = f"Best {summary.monitor} = {summary.best_metric:.4f} at epoch {summary.best_epoch} (best.pt)"
        cards["run/best_epoch"] = f"{head}; validation ({prefix}) at that epoch:\n\n```\n{table}\n```"
    config = {k: v for k, v in run.config.items() if k != "split"}  # the split's record: split.csv
    typed = " ".join(run.overrides) or "none"
    cards["run/settings"] = f"Overrides: `{typed}`\n\nConfig, resolved:\n\n```yaml\n{as_yaml(config)}```"
    return cards


class TensorBoardLogger:
    """``RUN/tensorboard`` event files, read by ``tensorboard --logdir``."""

    name = "tensorboard"

    def __init__(self) -> None:
        self.writer: SummaryWriter | None = None
        self.run: RunInfo | None = None

    def open(self, run: RunInfo, resume_after: int) -> None:
        self.run = run
        fast_checksums()
        self.writer = SummaryWriter(str(RunFolder(run.run_dir).tensorboard), purge_step=resume_after + 1)
        if len(run.class_names) <= DETAIL_CLASSES:  # the per-class charts
            hparams.add_layout(self.writer, run.prefixes, run.class_names, run.class_counts)

    def log_epoch(self, record: EpochRecord) -> None:
        assert self.writer is not None and self.run is not None
        names, epoch = self.run.class_names, record.epoch
        for prefix, res in record.results.items():  # a few milliseconds a figure
            if len(names) > DETAIL_CLASSES:  # a matrix too large to read: its largest cells
                text = top_confusions(res.matrix(), names)
                self.writer.add_text(board_tag(f"{prefix}/top_confusions"), text, epoch)
                continue
            figure = confusion_image(res.confusion_matrix, names, f"{prefix} epoch {epoch}")
            picture = np.asarray(figure)
            self.writer.add_image(board_tag(f"{prefix}/confusion_matrix"), picture, epoch, dataformats="HWC")
        for prefix, picture in record.pictures.items():  # the error gallery, one card per model
            self.writer.add_image(
                board_tag(f"{prefix}/errors"), np.asarray(picture), epoch, dataformats="HWC"
            )
        for tag, value in record.scalars.items():
            self.writer.add_scalar(board_tag(tag), value, record.epoch)
        self.writer.flush()

    def close(self, summary: FitSummary | None) -> None:
        if self.writer is None or self.run is None:
            return
        if summary is not None:
            hparams.write_hparams(self.writer, self.run)
            for tag, text in run_text(self.run, summary).items():  # the Text tab, at the best epoch
                self.writer.add_text(tag, text, summary.best_epoch)
            for prefix, picture in summary.pictures.items():  # best.pt's gallery, at its epoch
                tag = board_tag(f"{prefix}/errors_of_best_pt")
                self.writer.add_image(tag, np.asarray(picture), summary.best_epoch, dataformats="HWC")
        self.writer.close()
