"""The one error type a user is meant to read."""


class StvsrError(Exception):
    """Something the user can fix: a bad file, a bad option, a missing input.

    The command line prints its message as a single line and exits non-zero;
    the message says what went wrong and what to do about it.
    """


class WeightsError(StvsrError):
    """A weights file that cannot be used, with the reason in words."""


def first_line(message: str | BaseException, otherwise: str | None = None) -> str:
    """The first line of an error's message or of a program's error output
    (an error re-raised from a DataLoader worker carries a whole traceback).
    Where there is none, `otherwise`, or by default an exception's type name."""
    text = str(message).strip()
    if text:
        return text.splitlines()[0]
    if otherwise is not None:
        return otherwise
    return type(message).__name__ if isinstance(message, BaseException) else ""
