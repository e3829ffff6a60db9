"""The scripts as small Hydra apps: a typed settings dataclass each, composed from ``key=value``.

``python scripts/evaluate.py --help`` lists the keys with their defaults (``???``: required),
``--cfg job`` prints the composed settings, a wrong key or type gets Hydra's message. The
scripts write no run directory and leave logging alone. A script's function takes the same
settings as a mapping (``evaluate({"checkpoint": ..., "calibrate": "true"})``), typed and
checked the same way; a mistake is a UserError naming the key, which the command line turns
into one line on stderr and exit status 2, as train.py does. No torch here: the scripts load
their libraries once the settings pass, so ``--help`` and a mistake answer in about a second.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn, Optional, TypeVar, get_type_hints

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from common.errors import UserError
from common.signals import unwind_on_ctrl_c
from data.settings import ImageFolderSettings, LabelFileSettings

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"

# ``dataset.*`` for the scripts that read data: any key of a tree's or a label file's settings,
# unset by default (None: the checkpoint's own value). Made from the dataclasses, so it never
# drifts from them.
DATASET_KEYS = {
    f.name: get_type_hints(cls)[f.name]
    for cls in (ImageFolderSettings, LabelFileSettings)
    for f in dataclasses.fields(cls)
}
DatasetOverrides = dataclasses.make_dataclass(
    "DatasetOverrides",
    [(name, Optional[kind], None) for name, kind in DATASET_KEYS.items()],  # noqa: UP045
)


def fail(message: str) -> NoReturn:
    """A user's mistake: one line on stderr and exit status 2, as train.py does."""
    print(message, file=sys.stderr)
    sys.exit(2)


def nested(args: Mapping[str, Any]) -> dict[str, Any]:
    """``{"dataset.root": x}`` -> ``{"dataset": {"root": x}}``."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        *parents, last = key.split(".")
        node = out
        for parent in parents:
            node = node.setdefault(parent, {})
        node[last] = value
    return out


def command(script: str) -> str:
    """How a script is typed: ``python scripts/evaluate.py``, ``python scripts/tools/reference_loop.py``."""
    folder = "scripts/tools" if (ROOT / "scripts" / "tools" / f"{script}.py").is_file() else "scripts"
    return f"python {folder}/{script}.py"


def parse_settings(schema: type[T], args: T | Mapping[str, Any], script: str) -> T:
    """``args`` as ``schema``: strings are typed as on the command line; UserError names the key."""
    if isinstance(args, schema):
        return args
    try:
        config = OmegaConf.merge(OmegaConf.structured(schema), nested(args))
        return OmegaConf.to_object(config)  # type: ignore[return-value]
    except MissingMandatoryValue as err:
        raise UserError(f"give {err.full_key}=... (`{command(script)} --help` lists the keys)") from None
    except OmegaConfBaseException as err:
        reason = str(err).splitlines()[0]
        raise UserError(f"{err.full_key}: {reason} (`{command(script)} --help` lists the keys)") from None


def output_folder(folder: Path, key: str, value: str) -> Path:
    """Create ``folder`` for an output now, before any work; a UserError naming ``key`` if it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"{key}={value!r}: the folder {str(folder)!r} cannot be created ({err.strerror})."
        ) from None
    if not os.access(folder, os.W_OK):
        raise UserError(f"{key}={value!r}: the folder {str(folder)!r} is not writable.")
    return folder


HELP = """${hydra.help.app_name}

${hydra.help.header}
%s
Settings, as key=value (??? marks a required one; null under dataset: the checkpoint's own), with
their defaults:

$CONFIG
--cfg job prints the composed settings; --help shows this.
"""
MODES_HELP = """
%s=%s chooses what to run (each has its own settings; the default is %s).
"""


def run_app(
    main: Callable[[Any], object],
    schema: type | dict[str, type],
    script: str,
    about: str,
    mode: str = "mode",
) -> None:
    """Run ``main`` on the settings Hydra composes from the command line into ``schema``.

    ``schema`` may map names to dataclasses, one per thing the script can do: the Hydra config
    group ``mode`` chooses among them (``benchmark.py measure=runs``), the first is the default.
    """
    store = ConfigStore.instance()
    schemas = schema if isinstance(schema, dict) else {script: schema}
    grouped, first = len(schemas) > 1, next(iter(schemas))
    if grouped:
        for name, kind in schemas.items():
            store.store(group=mode, name=name, node=kind, package="_global_")
    else:
        store.store(name=f"{script}_settings", node=schemas[first])
    modes = MODES_HELP % (mode, "|".join(schemas), first) if grouped else ""
    store.store(
        name=script,
        node={
            "defaults": [
                {mode: first} if grouped else f"{script}_settings",
                {"override hydra/job_logging": "none"},
                {"override hydra/hydra_logging": "none"},
                "_self_",
            ],
            "hydra": {
                "run": {"dir": "."},
                "output_subdir": None,
                "help": {
                    "app_name": command(script).removeprefix("python "),
                    "header": about,
                    "template": HELP % modes,
                },
            },
        },
    )

    # the configs folder as search path (the settings themselves come from the ConfigStore)
    @hydra.main(version_base="1.3", config_path=str(CONFIGS), config_name=script)
    def app(config: Any) -> None:
        # from here Ctrl-C unwinds, so that a file being written atomically is removed, not left half
        unwind_on_ctrl_c()
        chosen = HydraConfig.get().runtime.choices.get(mode, first) if grouped else first
        try:
            settings = OmegaConf.to_container(config, throw_on_missing=True)
            main(parse_settings(schemas[chosen], settings, script))
        except KeyboardInterrupt:
            print(f"{script}: stopped by Ctrl-C; no output file was left half-written.", file=sys.stderr)
            sys.exit(130)
        except MissingMandatoryValue as err:
            fail(f"{script}: give {err.full_key}=... (`{command(script)} --help` lists the keys)")
        except UserError as err:
            fail(f"{script}: {err}")

    app()
