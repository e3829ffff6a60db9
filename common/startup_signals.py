"""Imported first by every entry point: a stop signal while the program is still loading its
libraries ends it at once, with one line, instead of a traceback from deep inside an import
(the policy: ``common.signals.install_starting``). The program replaces the handlers as soon as it
can act on a signal itself (train.py's ``StopSignals``, the scripts' ``run_app``).
"""

from common.signals import install_starting

install_starting()
