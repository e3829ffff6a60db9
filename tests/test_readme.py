"""README's commands, read from its code blocks: every train.py command (torchrun's too) composes
with the real configs, every script's settings are its own, and the make targets exist. A
renamed key or group fails here before a user types it."""

from __future__ import annotations

import dataclasses
import importlib
import re
import shlex
import sys

import pytest
from conftest import ROOT, compose_config

sys.path.insert(0, str(ROOT / "scripts"))

README = (ROOT / "README.md").read_text(encoding="utf-8")
SETTINGS = {  # script -> (module, its settings dataclass)
    "evaluate.py": ("evaluate", "EvaluateSettings"),
    "predict.py": ("predict", "PredictSettings"),
    "export.py": ("export", "ExportSettings"),
    "report.py": ("report", "ReportSettings"),
    "prepare_rafdb.py": ("prepare_rafdb", "PrepareSettings"),
    "compare_losses.py": ("compare_losses", "CompareSettings"),
}


def commands() -> list[list[str]]:
    """Each command of README's bash blocks, split as the shell would (comments dropped)."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                found.append(
                    [w[1:-1] if w.startswith("[") and w.endswith("]") and "=" in w else w for w in words]
                )
    return found


def first_value(override: str) -> str:
    """A sweep's ``key=a,b,c`` as its first job's ``key=a`` (lists in brackets kept whole)."""
    key, _, value = override.partition("=")
    return override if value.startswith("[") or "," not in value else f"{key}={value.split(',')[0]}"


def train_overrides(words: list[str]) -> list[str]:
    """The overrides of a train.py command, as its first job gets them (Hydra's own keys left out:
    they need a launch, not a composition)."""
    after = words[words.index("train.py") + 1 :]
    return [first_value(w) for w in after if "=" in w and not w.startswith(("hydra.", "hydra/"))]


def test_readmes_commands_are_found():
    found = commands()
    assert sum("train.py" in c for c in found) >= 8 and sum(c[:2] == ["make", "train"] for c in found) == 1
    assert {"evaluate.py", "predict.py", "export.py"} <= {w.rsplit("/", 1)[-1] for c in found for w in c}


@pytest.mark.parametrize("words", [c for c in commands() if "train.py" in c], ids=" ".join)
def test_each_train_command_in_readme_composes(words):
    compose_config(train_overrides(words), shrink=False)


@pytest.mark.parametrize(
    "words",
    [c for c in commands() if len(c) > 1 and c[1].startswith("scripts/") and c[1] != "scripts/benchmark.py"],
    ids=" ".join,
)
def test_each_script_command_in_readme_uses_settings_the_script_has(words):
    module, kind = SETTINGS[words[1].removeprefix("scripts/")]
    fields = {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), kind))}
    overrides = [w for w in words[2:] if "=" in w]
    own = [w for w in overrides if w.partition("=")[0].split(".")[0] in fields | {"dataset"}]
    if module == "compare_losses":  # the rest go to train.py, which must take them
        compose_config([first_value(w) for w in overrides if w not in own], shrink=False)
    else:
        assert own == overrides, f"{words[1]} has no setting for {set(overrides) - set(own)}"


def test_readmes_make_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    for target in {c[1] for c in commands() if c[0] == "make"}:
        assert re.search(rf"^{target}:", makefile, re.M), target
