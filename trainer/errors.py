"""The one exception type for a user's mistake (bad config value, missing file, bad data).

``train.py`` and the scripts print its message and exit non-zero instead of showing a stack
trace; anything else that goes wrong is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix; the message names the key, file or value and what is accepted."""


class NonFiniteLossError(UserError):
    """The training loss became NaN or infinite; the run stops before it saves anything more."""
