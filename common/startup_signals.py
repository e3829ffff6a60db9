"""Imported first by every entry point: a stop signal while the program is still loading its
libraries ends it at once, with one line, instead of a traceback from deep inside an import.

Ctrl-C raises KeyboardInterrupt wherever Python happens to be; inside ``import torch`` or numpy
that leaves half-initialised modules whose later errors (numpy's AttributeError, "cannot load
module more than once") hide the Ctrl-C. Nothing has been done yet at that point, so the
handlers installed here write one line and exit with 128 + the signal's number, as a shell
reports a process killed by it. The program replaces them as soon as it can act on a signal
itself (train.py's ``StopSignals``, the scripts' ``run_app``).
"""

import os
import signal


def stop_while_starting(signum: int, frame: object) -> None:
    os.write(2, f"Stopped by {signal.Signals(signum).name} while starting; nothing was done.\n".encode())
    os._exit(128 + signum)


for _signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(_signum, stop_while_starting)
