"""Nested settings as dotted keys: what a checkpoint's config looks like to a comparison or a log."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    if not isinstance(node, Mapping):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def as_yaml(config: Mapping[str, Any]) -> str:
    """A resolved config as people read it in train.log and TensorBoard's Text tab: compact YAML
    (innermost mappings on one line), in the config's own order."""
    return yaml.safe_dump(config, default_flow_style=None, sort_keys=False, width=110, allow_unicode=True)
