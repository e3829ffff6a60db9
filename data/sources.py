"""The data sources a run may read, found by their settings: the one registry of the ``dataset`` group.

A source is a ``data.settings.DataSettings`` subclass with a ``name`` and a ``listing`` of its
images. The built-in ones live in ``data.settings`` (folder trees, label files, the digits,
RAF-DB); another is one module ``data/<anything>_source.py`` holding its settings class (which
lists its images), plus one YAML in ``configs/dataset/`` whose defaults name its schema
(``- /schema/dataset@_here_: <name>``). Such modules are imported when the schemas are registered,
before any heavy library loads: keep their imports light, and import what lists the images
inside ``listing``.
"""

from __future__ import annotations

import importlib
import pkgutil

import data
from data.settings import DataSettings

MODULE_SUFFIX = "_source"


def subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *subclasses(sub)]
    return found


def find_sources() -> dict[str, type[DataSettings]]:
    """Every source by its name: the built-in ones and those of the ``data/*_source.py`` modules."""
    for module in pkgutil.iter_modules(data.__path__):
        if module.name.endswith(MODULE_SUFFIX):
            importlib.import_module(f"data.{module.name}")
    return {cls.__dict__["name"]: cls for cls in subclasses(DataSettings) if cls.__dict__.get("name")}
