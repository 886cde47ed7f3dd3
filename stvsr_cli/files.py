"""Writing the files a command leaves behind: checked before the work that
makes them, and written whole or not at all.

Weights, checkpoints, run logs, plots and JSON reports all go through
`write_atomically`; `check_output_file` refuses an output path that cannot
be written before an hour of work rather than after. `held_elsewhere` tells
a folder a live run is using from one a killed run left behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import StvsrError

try:
    import fcntl  # the locks of staging and work folders; POSIX only
except ImportError:  # pragma: no cover - Windows
    fcntl = None


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Call `write(temporary)` on a file beside `path`, then rename it onto `path`.

    A reader sees the old file or the new one, never half of one: a crash or
    a full disk during `write` leaves `path` as it was. The file gets the
    permissions a plain `open()` would give it (mkstemp's are owner-only).
    """
    path = Path(path)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def check_output_file(path: str | os.PathLike, option: str) -> None:
    """Refuse an output file whose folder does not exist, before an hour of work."""
    path = Path(path)
    if path.is_dir():
        raise StvsrError(f"{option} {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise StvsrError(f"{option} {path}: folder {path.parent} does not exist; create it first")


def held_elsewhere(lock: Path) -> bool | None:
    """Whether another process holds `lock`, a file that a run keeps flock'ed
    for as long as it lives (the kernel drops the lock however the process
    ends); None where that cannot be told (no flock here, or no such file).
    Raises OSError if the file cannot be opened."""
    if fcntl is None or not lock.exists():
        return None
    with lock.open("rb") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False
