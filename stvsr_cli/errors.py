"""The one error type a user is meant to read."""


class StvsrError(Exception):
    """Something the user can fix: a bad file, a bad option, a missing input.

    The command line prints its message as a single line and exits non-zero;
    the message says what went wrong and what to do about it.
    """


class WeightsError(StvsrError):
    """A weights file that cannot be used, with the reason in words."""
