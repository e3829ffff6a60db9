"""Images listed in a label file: CSV, TSV or space-separated rows of path, label and split.

Medical, industrial and competition data sets come as a folder of images and a table of labels
(``image_id,dx``); RAF-DB lists ``train_00001.jpg 5``. ``dataset=csv`` reads such a file where
it is, nothing copied: columns by name (a header row) or position, paths through
``dataset.path_format`` relative to ``dataset.root/dataset.image_dir``, labels as names or as
integers counted from ``dataset.first_label``, each row's split from a column, a pattern on its
path, or a file of its own. A bad row (malformed, no such file, an unknown label or split, a
path listed twice) is skipped and counted with examples (``dataset.on_bad_row=skip``) or
refused (``error``); never dropped without a word, and a file of mostly bad rows is a setting
to fix, refused either way. A class without images in a split is refused, as an empty class
folder is.
"""

from __future__ import annotations

import codecs
import csv
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import UserError
from data.images import IMAGE_EXTENSIONS
from data.label_checks import (
    BadRows,
    Row,
    check_splits,
    refuse_bad_rows,
    refuse_outlying_labels,
    warn_about_labels,
)
from data.listing import Listing
from data.names import printable

if TYPE_CHECKING:
    from data.settings import LabelFileSettings
from data.formats import DELIMITERS

log = logging.getLogger(__name__)


def detect_delimiter(first_line: str) -> str:
    """The delimiter's name from the first line: tab, comma, semicolon, else spaces."""
    for name in ("tab", "comma", "semicolon"):
        if DELIMITERS[name] in first_line:
            return name
    return "space"


def table(path: Path, delimiter: str | None) -> tuple[list[tuple[int, list[str]]], str]:
    """The non-empty rows of ``path`` with their line numbers, and the delimiter's name."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise UserError(f"The label file {printable(str(path))} cannot be read ({err.strerror}).") from None
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Excel's "Unicode text"
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError:
            raise UserError(
                f"The label file {printable(str(path))} starts as UTF-16 (its byte-order mark) but is "
                f"not valid UTF-16: save it as UTF-8 (CSV UTF-8 in Excel)."
            ) from None
    else:  # utf-8-sig: a BOM is not part of the first cell; surrogateescape: a path not UTF-8 names its file
        text = raw.decode("utf-8-sig", errors="surrogateescape")
    lines = text.splitlines()
    name = delimiter or detect_delimiter(next((line for line in lines if line.strip()), ""))
    if DELIMITERS[name] is None:
        cells: Iterator[list[str]] = (line.split() for line in lines)
    else:
        cells = csv.reader(lines, delimiter=DELIMITERS[name])
    rows = [(n, [c.strip() for c in row]) for n, row in enumerate(cells, 1)]
    return [(n, row) for n, row in rows if any(row)], name


def column(spec: str, header: list[str] | None, key: str, file: Path) -> int:
    """The position of a column given by name (found in ``header``) or as a number from 0."""
    if spec.isdigit():
        return int(spec)
    if header is None:
        raise UserError(
            f"{key}={spec!r} names a column, but dataset.header=false: {printable(str(file))} has no "
            f"header row. Give the column's position instead (0 is the first)."
        )
    if spec not in header:
        raise UserError(
            f"{key}={spec!r}: {printable(str(file))} has no such column; its header names: "
            f"{', '.join(map(printable, header))}. Give one of them, or a position from 0."
        )
    return header.index(spec)


class LabelReader:
    """Reads the label files of one ``LabelFileSettings`` into good rows and counted bad ones."""

    def __init__(self, settings: LabelFileSettings, root: Path) -> None:
        self.settings = settings
        self.images = root / settings.image_dir
        # the folder a row may point into: dataset.root, or the image folder where it lies elsewhere
        inside = within(os.path.normpath(self.images), os.path.normpath(root))
        self.boundary = os.path.normpath(root if inside else self.images)
        self.pattern = re.compile(settings.split_pattern) if settings.split_pattern else None
        self.values = {k.lower(): v for k, v in settings.split_values.items()}

    def image_path(self, cell: str) -> str:
        name = cell
        if self.settings.path_format != "{path}":
            stem, ext = os.path.splitext(cell)
            name = self.settings.path_format.format(path=cell, stem=stem, ext=ext)
        return os.path.normpath(os.path.join(self.images, name))

    def has_header(self, first: list[str], path_at: int, named: bool, file: Path) -> bool:
        """Whether the first row is a header: as set, or (columns by position) when its path
        names no file, said in the log."""
        if self.settings.header is not None or named:
            return bool(self.settings.header) or named
        if path_at < len(first) and os.path.isfile(self.image_path(first[path_at])):
            return False
        log.info(
            "%s: the first row is taken as a header (its path names no file): %s. Set dataset.header="
            "false if it is an image.",
            printable(str(file)),
            printable(" ".join(first)),
        )
        return True

    def read(self, file: Path, split: str | None, key: str) -> tuple[list[Row], BadRows, int]:
        """The good rows of ``file`` (every row in ``split``, or each row's own), its bad rows, and
        the number of data rows."""
        s = self.settings
        if not file.is_file():
            raise UserError(
                f"{key}={printable(str(getattr(s, key.split('.')[-1])))}: no label file at "
                f"{printable(str(file))} (read relative to dataset.root unless absolute)."
            )
        rows, _ = table(file, s.delimiter)
        bad = BadRows(file, Counter(), {})
        if not rows:
            raise UserError(f"The label file {printable(str(file))} ({key}) holds no rows.")
        keys = ["path_column", "label_column"] + (
            ["split_column"] if s.split_column and split is None else []
        )
        specs = [getattr(s, key) for key in keys]
        named = any(not spec.isdigit() for spec in specs)
        path_at = int(s.path_column) if s.path_column.isdigit() else 0
        header = rows[0][1] if self.has_header(rows[0][1], path_at, named, file) else None
        at = [column(spec, header, f"dataset.{key}", file) for spec, key in zip(specs, keys, strict=True)]
        if header is not None and len(rows) == 1:
            raise UserError(
                f"The label file {printable(str(file))} ({key}) holds a header row and no rows of images "
                f"({printable(' '.join(rows[0][1]))})."
            )
        good = []
        for line, cells in rows[1:] if header is not None else rows:
            if max(at) >= len(cells) or not all(cells[i] for i in at[:2]):
                bad.add("malformed row", line, f"{len(cells)} cell(s), {printable(' '.join(cells))!r}")
                continue
            row_split = split or self.split_of(cells, at)
            if row_split is None:
                bad.add("unknown split", line, self.split_text(cells, at))
                continue
            path = self.image_path(cells[at[0]])
            if not within(path, self.boundary):  # ../ or an absolute path: not this data set's
                bad.add("outside dataset.root", line, printable(path))
                continue
            if not path.lower().endswith(IMAGE_EXTENSIONS):
                bad.add("not an image", line, printable(path))
                continue
            if not os.path.isfile(path):
                bad.add("no such file", line, printable(path))
                continue
            good.append(Row(line, path, cells[at[1]], row_split))
        return good, bad, len(rows) - (header is not None)

    def split_of(self, cells: list[str], at: list[int]) -> str | None:
        if self.pattern is not None:
            found = self.pattern.search(cells[at[0]])
            return self.values.get(found.group(1).lower()) if found and found.group(1) else None
        if len(at) > 2:
            return self.values.get(cells[at[2]].lower())
        return "train"

    def split_text(self, cells: list[str], at: list[int]) -> str:
        if self.pattern is not None:
            return f"{printable(cells[at[0]])!r} (dataset.split_pattern={self.settings.split_pattern!r})"
        return f"{printable(cells[at[2]])!r} (dataset.split_values knows {', '.join(self.values)})"


def within(path: str, folder: str) -> bool:
    """Whether the normalised ``path`` lies in ``folder`` (by its text: links are followed later)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def classes_of(rows: list[Row], settings: LabelFileSettings) -> tuple[list[str], dict[str, int]]:
    """The class names and the label -> index map: integer labels count from ``first_label``
    (named by ``class_names`` if given), names are sorted unless ``class_names`` orders them."""
    labels = {row.label for row in rows}
    names = settings.class_names
    if labels and all(label.isdigit() for label in labels):
        first = settings.first_label
        count = len(names) if names else max(int(label) for label in labels) - first + 1
        index = {str(first + i): i for i in range(max(count, 0))}
        index |= {label: int(label) - first for label in labels if int(label) - first in range(count)}
        return list(names) if names else [str(first + i) for i in range(count)], index
    if names:
        return list(names), {name: i for i, name in enumerate(names)}
    ordered = sorted(labels)
    return ordered, {name: i for i, name in enumerate(ordered)}


def list_labels(settings: LabelFileSettings, root: Path) -> Listing:
    """The label files of ``settings`` as a Listing; UserError naming what is wrong."""
    reader = LabelReader(settings, root)
    files = [("dataset.labels", settings.labels, None)]
    files += [("dataset.val_labels", settings.val_labels, "valid")] if settings.val_labels else []
    files += [("dataset.test_labels", settings.test_labels, "test")] if settings.test_labels else []
    rows, seen, sources = [], {}, {}
    for key, name, split in files:
        file = root / Path(name).expanduser()
        good, bad, total = reader.read(file, split, key)
        kept = []
        for row in good:  # a file listed twice trains (or validates) on one image twice
            if row.path in seen:
                bad.add("listed twice", row.line, f"{printable(row.path)}, first at {seen[row.path]}")
                continue
            seen[row.path] = f"{file.name} line {row.line}"
            kept.append(row)
        refuse_outlying_labels(rows + kept, settings, file)
        classes, index = classes_of(rows + kept, settings)
        unknown = [row for row in kept if row.label not in index]
        for row in unknown:
            bad.add("unknown label", row.line, f"{printable(row.label)!r}")
        refuse_bad_rows(bad, total, settings.on_bad_row)
        rows += [row for row in kept if row.label in index]
        for split_ in ("train", "valid", "test"):
            if any(row.split == split_ for row in kept):
                sources.setdefault(split_, printable(str(file)))
    warn_about_labels(rows, settings)
    classes, index = classes_of(rows, settings)
    parts = {s: [(r.path, index[r.label]) for r in rows if r.split == s] for s in ("train", "valid", "test")}
    check_splits(parts, classes, settings, sources)
    return Listing(classes, parts["train"], parts["valid"], parts["test"], reader.images, sources)
