"""Segments: a run cut into pieces that survive an interruption and can be
shared out between processes.

A run covers source frames [first, end) (the whole video, or the part that
--start and --duration or --end name) and makes output frames 2*first ..
2*end - 1. Those are cut into segments of `--segment` seconds of source;
each is encoded into its own file in a work folder beside OUTPUT, and when
every segment is there they are joined without re-encoding (`encode.
join_segments`) and the source's audio and subtitles are added once.

Every run works this way, interrupted or not, so an interrupted run that is
resumed encodes exactly the segment files an unbroken run encodes, and the
joined video is the same frame for frame. Each segment's frames are the
whole run's frames too: the network sees the whole run's windows
(`stream.upscale_frames(wanted=...)`), which is why a segment is planned
from the first frame of the source, not upscaled from it.

The work folder (`.OUTPUT.stvsr.work`) holds `state.json` (what the run is:
its fingerprint and the options in words), each finished segment's file
(`seg-00003.mp4`, or a folder of PNG frames) and its record
(`seg-00003.json`: the frames in it), written after the file is in place,
so a record means a complete segment; and `.lock`, locked while a run uses
the folder. It is removed when OUTPUT is in place. A segment being encoded
is in a hidden staging folder inside it, which a resumed run removes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO

from .errors import StvsrError
from .files import held_elsewhere, write_atomically

try:
    import fcntl  # the work folder's lock; POSIX only
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger("stvsr")



def parse_time(text: str, option: str) -> float:
    """Seconds from ffmpeg's duration syntax: '90', '1.5', '01:30',
    '1:02:03.25'."""
    match = re.fullmatch(r"(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d*)?|\.\d+)", text.strip())
    if match is None:
        raise StvsrError(f"{option} {text!r} is not a time; write seconds (90, 1.5) or [HH:]MM:SS[.ms] (1:30)")
    first, second, seconds = match.groups()
    hours, minutes = (first, second) if second is not None else (None, first)
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds)


def frame_range(fps: Fraction, start: float = 0.0, duration: float | None = None,
                end: float | None = None) -> tuple[int, int | None]:
    """The source frames [first, last) that ffmpeg's -ss START -t DURATION
    (or -to END) keeps: those whose time, counted from the first frame, is
    at or after START and before START + DURATION. None: to the end."""
    def frames(seconds: float) -> int:  # frames before this time, exactly, for decimal seconds
        return math.ceil(Fraction(str(seconds)) * fps)

    if start < 0 or (duration is not None and duration <= 0):
        raise StvsrError("--start must be 0 or more and --duration more than 0")
    if duration is not None and end is not None:
        raise StvsrError("give --duration or --end, not both")
    first = frames(start)
    stop = end if end is not None else (start + duration if duration is not None else None)
    last = frames(stop) if stop is not None else None
    if last is not None and last <= first:
        raise StvsrError(f"from {start:g} s to {stop:g} s there is no frame at {float(fps):.4g} fps; "
                         "choose a later --end or a longer --duration")
    return first, last


@dataclass(frozen=True)
class Segment:
    """Source frames [first, end) of a run; `end` None: to the end of the video."""

    index: int
    first: int
    end: int | None

    def outputs(self) -> range | None:
        return range(2 * self.first, 2 * self.end) if self.end is not None else None

    def wants(self, output: int) -> bool:
        return output >= 2 * self.first and (self.end is None or output < 2 * self.end)


def plan_segments(first: int, end: int | None, expected: int | None, length: int) -> list[Segment]:
    """Segments of `length` source frames over [first, end), `end` None
    meaning the end of a video of about `expected` frames (a probe's
    estimate: the last segment takes whatever the video really has, and
    one that finds no frames is simply empty)."""
    stop = end if end is not None else expected
    if stop is not None and first >= stop:
        raise StvsrError(f"--start is at frame {first} and the video has about {stop}; choose an earlier --start")
    count = max(1, math.ceil((stop - first) / length)) if stop is not None else 1
    bounds = [first + i * length for i in range(count)] + [end]
    return [Segment(i, bounds[i], bounds[i + 1]) for i in range(count)]


def fingerprint(facts: dict) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_facts(path: Path | None) -> dict | None:
    """What identifies a file's contents cheaply: where, how big, when written."""
    if path is None:
        return None
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "bytes": stat.st_size, "modified_ns": stat.st_mtime_ns}


class WorkFolder:
    """The folder beside OUTPUT where a run keeps its finished segments."""

    def __init__(self, output: Path | str) -> None:
        output = Path(os.fspath(output).rstrip("/" + os.sep) or ".")
        self.output = output
        # Not ".NAME.stvsr-...": that is a staging folder, which `encode.remove_leftovers` removes.
        self.path = output.parent / f".{output.name}.stvsr.work"
        self._lock: IO[bytes] | None = None

    def prepare(self, facts: dict, segments: list[Segment], resume: bool) -> list[int]:
        """Start a new work folder, or with `resume` check that the one there
        is this run's; the indices of the segments still to do. Refuses, in
        one line, a folder left by a run it would not continue."""
        if self.path.exists() and held_elsewhere(self.path / ".lock"):
            raise StvsrError(f"another stvsr run is writing {self.output.name} right now (its work is in "
                             f"{self.path}); wait for it to finish")
        if self.path.exists() and not resume and not self.finished():
            # Killed before a segment was done (kill -9 leaves no chance to clean up): nothing to keep.
            shutil.rmtree(self.path, ignore_errors=True)
            log.warning("removed %s, the unfinished work of an earlier run into %s that was killed",
                        self.path, self.output.name)
        if self.path.exists() and not resume:
            done = len(self.finished())
            raise StvsrError(
                f"{self.output.name}: an earlier run stopped with {done} segment{'s' * (done != 1)} done, kept in "
                f"{self.path}; run the same command with --resume to continue it, or delete that folder to start over"
            )
        if self.path.exists():
            state = self._state()
            if state.get("fingerprint") != fingerprint(facts):
                raise StvsrError(f"--resume: {self.path} holds a run with other settings "
                                 f"({_difference(state.get('facts', {}), facts)}); run the same command as before, "
                                 "or delete that folder to start over")
        else:
            self.path.mkdir()
            self._write(self.path / "state.json", {"fingerprint": fingerprint(facts), "facts": facts})
        for leftover in self.path.glob(".seg-*"):  # segments a killed run was encoding
            shutil.rmtree(leftover, ignore_errors=True)
        finished = self.finished()
        return [segment.index for segment in segments if segment.index not in finished]

    def lock(self) -> None:
        """Hold a shared lock while this process uses the folder (every
        process of a torchrun launch holds one); a new run that cannot lock
        it exclusively knows a live run has it."""
        self._lock = (self.path / ".lock").open("ab")
        if fcntl is not None:
            fcntl.flock(self._lock, fcntl.LOCK_SH)

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def segment_path(self, index: int, suffix: str) -> Path:
        return self.path / f"seg-{index:05d}{suffix}"

    def record(self, index: int, frames: int) -> None:
        """Say a segment is finished; its file must already be in place."""
        self._write(self.path / f"seg-{index:05d}.json", {"frames": frames})

    def finished(self) -> dict[int, int]:
        """Segment index -> output frames, for every finished segment."""
        done = {}
        for record in self.path.glob("seg-*.json"):
            try:
                done[int(record.stem[4:])] = json.loads(record.read_text())["frames"]
            except (ValueError, KeyError, OSError):
                continue  # not written whole: the segment is done again
        return done

    def remove(self) -> None:
        self.unlock()
        shutil.rmtree(self.path, ignore_errors=True)

    def _state(self) -> dict:
        try:
            return json.loads((self.path / "state.json").read_text())
        except (OSError, ValueError):
            return {}

    @staticmethod
    def _write(path: Path, value: dict) -> None:
        """Atomically: a reader sees all of it or nothing."""
        text = json.dumps(value, indent=1, sort_keys=True, default=str)
        write_atomically(path, lambda temporary: temporary.write_text(text))


def _difference(old: dict, new: dict) -> str:
    """The first setting that differs, in words: 'encode.crf was 18, now 20'."""
    def first(old: dict, new: dict, prefix: str) -> str | None:
        for key in sorted(set(old) | set(new)):
            a, b = old.get(key), new.get(key)
            if isinstance(a, dict) and isinstance(b, dict):
                found = first(a, b, f"{prefix}{key}.")
                if found:
                    return found
            elif a != b:
                return f"{prefix}{key} was {a}, now {b}"
        return None

    new = json.loads(json.dumps(new, default=str))  # as it reads back from state.json
    return first(old, new, "") or ("it was made by another version of stvsr" if old else "its state file is unreadable")


def describe(options) -> dict:
    """A dataclass of options as plain values, for a fingerprint."""
    return json.loads(json.dumps(dataclasses.asdict(options), default=str))
