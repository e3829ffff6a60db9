"""Command-line overrides as the user typed them.

A sweep's jobs get their overrides from Hydra's sweeper with the override grammar's special
characters escaped (``logger.mlflow.tracking_uri=http\\://host\\:5000``); what a person reads (the
log's first line, MLflow's params, the reports) shows them unescaped.
"""

from __future__ import annotations

import re

HYDRA_ESCAPED = re.compile(r"\\([\\()\[\]{}:=, \t])")


def as_typed(override: str) -> str:
    """``override`` without the escapes Hydra's sweeper adds."""
    return HYDRA_ESCAPED.sub(r"\1", override)
