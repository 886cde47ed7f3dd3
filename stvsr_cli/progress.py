"""The progress bar of `stvsr upscale` and `stvsr eval`: frames done, the
measured rate, and the time left.

Frames arrive in bursts, a window's worth at a time (about 4 output frames
a window, seconds apart on a CPU), so a rate taken over the last few frames
is the speed of handing over a burst, not of the work: right after the first
window it read 128 to 155 fps. `Throughput` measures frames over time since
the work started, then over the last `span` seconds, always at the moment a
frame arrives; until the first frames arrive there is no rate and no ETA.
"""

from __future__ import annotations

import time
from collections import deque

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text


class Throughput:
    """Frames per second over the recent past, from (time, frames done) marks.

    `start(now)` marks the moment the work began; `mark(now, done)` each
    time frames are done. The rate is the frames done since the mark
    `span` seconds before the latest one (since the start, early on) over
    the time between the two: a window's burst counts fully and only once.
    """

    def __init__(self, span: float = 30.0) -> None:
        self.span = span
        self._marks: deque[tuple[float, int]] = deque()

    def start(self, now: float) -> None:
        self._marks = deque([(now, 0)])

    def mark(self, now: float, done: int) -> None:
        if not self._marks:
            self.start(now)
        self._marks.append((now, done))
        # Keep one mark at or before now - span: the reference of the rate.
        while len(self._marks) > 2 and self._marks[1][0] <= now - self.span:
            self._marks.popleft()

    @property
    def rate(self) -> float | None:
        """Frames per second, or None before any frame is done."""
        if len(self._marks) < 2:
            return None
        (then, done_then), (now, done_now) = self._marks[0], self._marks[-1]
        if done_now <= done_then or now <= then:
            return None
        return (done_now - done_then) / (now - then)

    def seconds_left(self, total: int | None, now: float) -> float | None:
        """Time to finish `total` frames at the current rate, counted down
        from the latest mark; None while there is no rate or no total."""
        rate = self.rate
        if rate is None or not total or len(self._marks) < 2:
            return None
        latest, done = self._marks[-1]
        return max(0.0, (total - done) / rate - (now - latest))


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        rate = task.fields.get("rate")
        return Text(f"{rate:.2f} fps" if rate else "-- fps", style="progress.data.speed")


class _TimeLeftColumn(ProgressColumn):
    max_refresh = 0.5

    def render(self, task: Task) -> Text:
        throughput: Throughput = task.fields["throughput"]
        left = throughput.seconds_left(task.total, time.monotonic())
        if left is None:
            return Text("ETA -:--:--", style="progress.remaining")
        minutes, seconds = divmod(round(left), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"ETA {hours}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


class FrameProgress:
    """A rich progress bar of output frames: done/total, fps, elapsed, ETA.
    It appears when the work starts, not while inputs are being checked, and
    leaves nothing behind (not even an empty line) when it never started."""

    def __init__(self, console: Console, label: str = "upscaling") -> None:
        self._throughput = Throughput()
        self._progress = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("frames"),
            _RateColumn(),
            TimeElapsedColumn(),
            _TimeLeftColumn(),
            console=console,
            transient=True,  # the summary line replaces it; an error line stands alone
        )
        self._task = self._progress.add_task(label, total=None, rate=None, throughput=self._throughput)

    def __enter__(self) -> FrameProgress:
        return self

    def __exit__(self, *exc) -> None:
        # Not Progress.stop(), which prints an empty line when the output is
        # not a terminal (a log, a pipe) even though the bar left nothing to end.
        self._progress.live.stop()

    def update(self, done: int, total: int | None) -> None:
        """Starts the bar on the first call, once the checks have passed."""
        now = time.monotonic()
        started = self._progress.live.is_started
        if not started:
            self._throughput.start(now)
        if done:
            self._throughput.mark(now, done)
        self._progress.update(self._task, completed=done, total=max(total, done) if total else None,
                              rate=self._throughput.rate)
        if not started:  # after the update, so that the first frame drawn has the total
            self._progress.start()
