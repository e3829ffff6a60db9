"""How a launch of train.py ends at the command line: a message and an exit status, never a
stack trace for what the user can fix, and no empty run directory left behind.

| what happened                         | exit status | what stays on disk                      |
|---------------------------------------|-------------|-----------------------------------------|
| a setting or the data is refused      | 2           | nothing (the dated folder is removed)   |
| SIGTERM, SIGINT (Ctrl-C), SIGHUP, USR1 | 128 + signal| last.pt, resumable exactly             |
| the disk is full                      | 1           | the previous checkpoints, intact        |
| a file of the run may not be written  | 2           | the previous checkpoints, intact        |
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import NoReturn

from hydra.core.override_parser.overrides_parser import OverridesParser

from common.dist import launched_by_torchrun
from common.errors import DiskFullError, UserError, disk_full_cause
from common.nested import as_yaml
from common.run_folder import LAST_SHOWN, RunFolder
from common.signals import Interrupted, StopSignals
from data.names import decodable
from trainer.shell import cluster
from trainer.shell.rundir import KEPT_BY_HYDRA
from trainer.shell.runlock import in_use
from trainer.shell.sweep import TrialFailed, announce_sweep, records_failures

log = logging.getLogger("train")

DISK_HINT = (
    "The disk is full, or a quota or file-size limit was reached; checkpoints written earlier are "
    "intact. Free some space, then continue with resume=auto and the same hydra.run.dir."
)


def prepare_argv(argv: list[str]) -> list[str]:
    """train.py's command line as Hydra should see it: under torchrun, rank 0's Hydra makes the run
    directory and the other ranks' write theirs nowhere; a sweep is refused (one torchrun each).
    A sweep's keys go to the environment, for job processes that do not see this command line."""
    if not launched_by_torchrun():
        if announce_sweep(argv):
            cluster.forward_stops_to_jobs()
        return argv
    if {"-m", "--multirun"} & set(argv):
        sys.exit("train.py: a multirun sweep cannot run under torchrun; launch one torchrun per setting.")
    if int(os.environ.get("RANK", "0")) > 0:
        return [*argv, "hydra.output_subdir=null", f"hydra.run.dir={tempfile.mkdtemp(prefix='rank')}"]
    return argv


def drop_scratch_dir(run_dir: Path) -> None:
    """Remove the folder ``prepare_argv`` made for a rank above 0 once Hydra has opened its log
    there: that rank writes into rank 0's run directory, and its open log needs no name on disk."""
    if launched_by_torchrun() and int(os.environ.get("RANK", "0")) > 0:
        shutil.rmtree(run_dir, ignore_errors=True)


def warn_unfindable_resume(resume: str | None, hydra_overrides: list[str], multirun: bool = False) -> None:
    """resume=auto looks in the run directory; a dated one made for this launch never holds anything."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    if resume == "auto" and not any(o.startswith(f"{key}=") for o in hydra_overrides):
        log.warning(
            "resume=auto looks for %s in the run directory, but without %s every "
            "launch gets a new dated directory, so there is never anything to resume. Give the same "
            "%s=DIR on every launch (e.g. %s=runs/faces resume=auto).",
            LAST_SHOWN,
            key,
            key,
            key,
        )


def remove_if_untouched(run_dir: Path) -> None:
    """Drop a run directory that holds only what Hydra wrote for this launch (a refused run),
    unless another process is at work in it."""
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= KEPT_BY_HYDRA and not in_use(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)


def hydra_override(key: str, value: str) -> str:
    """``key=value`` as Hydra's override grammar reads it back: quoted where the value needs it
    (a folder named ``lr=0.1`` or ``a,b``)."""
    plain = f"{key}={value}"
    try:
        [parsed] = OverridesParser.create().parse_overrides([plain])
        if not parsed.is_sweep_override() and str(parsed.value()) == value:
            return plain
    except Exception:  # Hydra cannot read it unquoted
        pass
    # in a quoted value, backslashes escape only a quote or the closing quote: double those
    quoted = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value)
    return f"{key}='{quoted}'"


def continue_command(task_overrides: list[str], run_dir: Path) -> str:
    """The command that continues this run from its last checkpoint."""
    kept = [o for o in task_overrides if not o.startswith(("resume=", "hydra.run.dir="))]
    args = shlex.join(["train.py", *kept, hydra_override("hydra.run.dir", str(run_dir)), "resume=auto"])
    return f"the same torchrun options and {args}" if launched_by_torchrun() else f"python {args}"


def report_interrupt(err: Interrupted, run_dir: Path, task_overrides: list[str]) -> None:
    """One line: what stopped the run, what is saved, how to continue."""
    run_dir = err.run_dir or run_dir
    if int(os.environ.get("RANK", "0")) > 0:
        return  # rank 0 says it
    saved = RunFolder(run_dir).last.is_file()
    if saved and cluster.in_job():
        log.warning("Training %s. A requeued job continues from it (resume=auto).", err)
    elif saved:
        log.warning("Training %s. To continue: %s", err, continue_command(task_overrides, run_dir))
    else:
        log.warning("Training %s; nothing had been saved yet, so there is nothing to resume.", err)
        remove_if_untouched(run_dir)


def escape_record(record: logging.LogRecord) -> bool:
    """A handler filter: a message naming a file whose name is not UTF-8 is written with ``\\xNN``
    escapes, instead of failing in the console's or train.log's encoder."""
    message = record.getMessage()
    escaped = decodable(message)
    if escaped is not message:
        record.msg, record.args = escaped, None
    return True


def quiet_when_closed(handler: logging.StreamHandler) -> None:
    """A console handler whose reader went away (``train.py | head``, a closed terminal) stops
    writing without a word: its stream is pointed at /dev/null, as Python's documentation advises
    for SIGPIPE; train.log keeps everything. Other errors are reported as logging reports them."""
    report = handler.handleError

    def handle_error(record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], BrokenPipeError):
            with suppress(OSError, ValueError, AttributeError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), handler.stream.fileno())
            return
        report(record)

    handler.handleError = handle_error  # type: ignore[method-assign]


FILE_ONLY = "train.config"  # a logger whose records go to train.log, not to the console


def not_file_only(record: logging.LogRecord) -> bool:
    return record.name != FILE_ONLY


def prepare_log_handlers() -> None:
    """Put ``escape_record`` on every handler of the root logger (Hydra's console and train.log),
    make the console quiet when its reader has gone (``quiet_when_closed``) and leave the
    ``FILE_ONLY`` records to the file."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(escape_record)
        if type(handler) is logging.StreamHandler:  # the console, not train.log's FileHandler
            quiet_when_closed(handler)
            handler.addFilter(not_file_only)
            handler.setFormatter(ConsoleFormat())


class ConsoleFormat(logging.Formatter):
    """The console's lines: the time and the message, and the level where it is a warning or
    worse (train.log keeps Hydra's full prefix: date, module and level)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        if record.levelno < logging.WARNING:
            return line
        time, _, message = line.partition(" ")
        return f"{time} {record.levelname}: {message}"


def log_config(config: dict) -> None:
    """The resolved config, once, into train.log: compact YAML (innermost mappings on one line)."""
    text = as_yaml(config)
    heading = "Config, resolved (.hydra/config.yaml: as composed)"
    logging.getLogger(FILE_ONLY).info("%s:\n%s", heading, text.rstrip())


def exit_now(status: int = 0) -> NoReturn:
    """End a launch at once, without the interpreter's teardown of torch, timm and the rest (a
    second or more): every file is written and closed by then; the logs are flushed here."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # a closed pipe (| head): nothing more to say there
            stream.flush()
    os._exit(status)


def stopper(run_dir: Path, task_overrides: list[str]) -> Callable[[int], NoReturn]:
    """``StopSignals``' ``on_stop_now`` for train.py: a signal outside training (the data scan, the
    model's building, the libraries loading) says what is saved and ends the process now."""

    def stop_now(signum: int) -> NoReturn:
        report_interrupt(
            Interrupted(signum, "stopped at once; checkpoints written earlier are intact"),
            run_dir,
            task_overrides,
        )
        exit_now(128 + signum)

    return stop_now


@contextmanager
def exits_cleanly(
    run_dir: Path, task_overrides: list[str], stop: StopSignals | None = None
) -> Iterator[None]:
    """Turn a refusal, a stop signal or a full disk into its message and exit status. Under a
    sweeper that records failures, a diverged trial fails (``TrialFailed``) and the sweep goes on;
    in a submitit job, a stop on the preemption signal requeues the job."""
    try:
        yield
    except UserError as err:
        log.error("%s", err)
        remove_if_untouched(run_dir)  # the message is on the console; no empty dated folder stays
        if records_failures():  # the sweeper records the trial as failed (never left running)
            raise TrialFailed(str(err)) from None
        sys.exit(2)
    except Interrupted as err:
        report_interrupt(err, run_dir, task_overrides)
        cluster.requeue_after(err.signum, err.run_dir or run_dir, stop and stop.previous.get(err.signum))
        sys.exit(err.exit_status)
    except PermissionError as err:  # a file or folder of the run that this user may not write
        log.error(
            "Could not write %s (%s). Fix its permissions, or give the run a folder you can write to "
            "(hydra.run.dir=DIR); checkpoints written earlier are intact.",
            err.filename,
            err.strerror,
        )
        sys.exit(2)
    except Exception as err:
        if disk_full_cause(err) is None:
            raise
        log.error(
            "%s", err if isinstance(err, DiskFullError) else f"Could not write a file ({err}). {DISK_HINT}"
        )
        sys.exit(1)
