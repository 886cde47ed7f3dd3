"""Windows and stitching: how a stream of N LR frames becomes 2N output frames.

MEGAN takes a window of n + 1 = 4 LR frames and returns 2n + 1 = 7 HR frames:
slot k of a window that starts at LR frame s shows time s + k/2 (in LR frame
units), so even slots reconstruct input frames and odd slots are new frames
halfway between two inputs.

The rule, for a shot (a run of frames with no scene cut) of length N:

- Windows start every 2 frames (0, 2, 4, ...), plus one that ends exactly at
  the last frame when N - 4 is odd, so every frame is inside some window and
  no window reaches past the shot.
- Output time t (t = 0, 0.5, 1, ..., N - 1) is taken from the window whose
  centre (start + 1.5) is nearest to t: the frame with the most context on
  both sides. Where two windows are equally near (t = s + 2.5 between the
  windows at s and s + 2), their two predictions are averaged with equal
  weight. A window's middle output slots are therefore used, its edges only
  at the start and end of a shot.
- The last output time, N - 0.5, lies after the last input frame: it repeats
  output N - 1, so N inputs give exactly 2N outputs at twice the frame rate
  and the duration (and the audio sync) stay as they were.
- A shot shorter than 4 frames is padded by repeating its edge frames, with
  the real frames kept in the middle of the window.
- A scene cut ends one shot and starts the next, so no window ever holds
  frames from both sides of a cut, and the in-between output at the cut is
  the last frame of the earlier shot, repeated, never a ghosted blend.

The plan is made while frames stream in (`WindowPlanner`), holding at most a
window's worth of frames, and the network's outputs are assembled by
`Stitcher` as soon as each output frame is final, so memory stays flat
however long the video is.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, Iterable, Iterator, TypeVar

import torch
from torch import Tensor

from .defaults import DEFAULT_SCENE_THRESHOLD  # how 0.15 was chosen: see there

Frame = TypeVar("Frame")


@dataclass(frozen=True)
class Window(Generic[Frame]):
    """A window to run through the network: `frames` are the n + 1 LR frames
    (edge frames repeated where a shot is short). `outputs` holds every
    output index (counted over the whole stream) that can take a frame from
    it, and perhaps a few more: a run that wants only some outputs (a
    segment) skips the windows that cannot feed them."""

    key: int
    frames: tuple[Frame, ...]
    outputs: range = range(0)


@dataclass(frozen=True)
class Emit:
    """One output frame: the weighted sum of `sources`, each (window key,
    output slot, weight); the weights sum to 1. Every window named here comes
    before this item in the plan."""

    sources: tuple[tuple[int, int, float], ...]


class WindowPlanner(Generic[Frame]):
    """Turns a stream of frames into a plan: `Window`s to run and `Emit`s
    that say how to assemble each output frame from window outputs, in
    output order.

    Call `push(frame, cut=...)` for every input frame (`cut=True` when a
    scene cut lies just before it) and `finish()` after the last; each
    returns the plan items that became final.
    """

    def __init__(self, input_frames: int = 4) -> None:
        if input_frames < 2:
            raise ValueError("a window needs at least 2 frames")
        self.size = input_frames
        # Consecutive windows share a frame or more, so every in-between time
        # lies inside one; 2 windows a pair of frames for MEGAN's 4.
        self.stride = 2 if input_frames >= 3 else 1
        self._keys = itertools.count()
        self._pushed = 0  # frames pushed so far, all shots
        self._start_shot()

    def _start_shot(self) -> None:
        self._offset = self._pushed  # index in the stream of this shot's first frame
        self._frames: dict[int, Frame] = {}  # shot index -> frame, only the ones a future window needs
        self._length = 0  # frames of this shot seen so far
        self._windows: list[tuple[int, float]] = []  # (key, time of slot 0) of this shot's windows
        self._next_output = 0  # next output time of this shot, in half frames

    def push(self, frame: Frame, cut: bool = False) -> list[Window[Frame] | Emit]:
        items: list[Window[Frame] | Emit] = []
        if cut and self._length:
            items += self._finish_shot()
        index = self._length
        self._frames[index] = frame
        self._length += 1
        self._pushed += 1
        start = index - self.size + 1
        if start >= 0 and start % self.stride == 0:
            items.append(self._window(tuple(range(start, start + self.size)), float(start)))
            items += self._emit_ready(final=False)
            # The next window starts at start + stride, or at start + 1 if the
            # shot ends one frame later (the window that ends on the last frame).
            self._forget_before(start + 1)
        return items

    def finish(self) -> list[Window[Frame] | Emit]:
        return self._finish_shot() if self._length else []

    def _finish_shot(self) -> list[Window[Frame] | Emit]:
        items: list[Window[Frame] | Emit] = []
        n, size = self._length, self.size
        if n < size:
            # Short shot: one window, real frames in the middle, edges repeated.
            pad_left = (size - n) // 2
            indices = tuple(min(max(i - pad_left, 0), n - 1) for i in range(size))
            items.append(self._window(indices, float(-pad_left)))
        elif (n - size) % self.stride:
            items.append(self._window(tuple(range(n - size, n)), float(n - size)))
        items += self._emit_ready(final=True)
        self._start_shot()
        return items

    def _window(self, indices: tuple[int, ...], t0: float) -> Window[Frame]:
        key = next(self._keys)
        self._windows.append((key, t0))
        # Output 2t shows time t; the slot after a shot's last frame repeats it, hence the + 2.
        first, last = self._offset + max(t0, 0.0), self._offset + t0 + self.size - 1
        return Window(key, tuple(self._frames[i] for i in indices), range(int(2 * first), int(2 * last) + 2))

    def _emit_ready(self, final: bool) -> list[Emit]:
        """Emits for every output time whose sources can no longer change.

        A window not yet planned starts at least one frame after the latest
        one, so its centre is at least `latest_t0 + 1 + centre_offset`; an
        output time is final once its best window is strictly nearer than
        that (ties must wait: a tie is blended).
        """
        centre_offset = (self.size - 1) / 2
        last_time = 2 * (self._length - 1)  # in half frames
        earliest_future_centre = self._windows[-1][1] + 1 + centre_offset
        emits = []
        while self._next_output <= last_time + (1 if final else 0):
            half = self._next_output
            t = min(half, last_time) / 2  # the time after the last frame repeats the last frame
            covering = [(abs(t - (t0 + centre_offset)), key, t0) for key, t0 in self._windows
                        if t0 <= t <= t0 + self.size - 1]
            best = min(distance for distance, _, _ in covering)
            if not final and best >= earliest_future_centre - t:
                break
            chosen = [(key, round(2 * (t - t0))) for distance, key, t0 in covering if distance == best]
            emits.append(Emit(tuple((key, slot, 1.0 / len(chosen)) for key, slot in chosen)))
            self._next_output += 1
        return emits

    def _forget_before(self, index: int) -> None:
        for old in [i for i in self._frames if i < index]:
            del self._frames[old]
        # Windows whose last time is before the next output can never be a source again.
        self._windows = [(key, t0) for key, t0 in self._windows if t0 + self.size - 1 >= self._next_output / 2]


class Stitcher:
    """Assembles output frames from window outputs, following the plan.

    `add(key, outputs)` stores a window's (2n+1, C, H, W) output;
    `emit(item)` returns one finished output frame. Only the few window
    outputs that a later emit can still name are kept.
    """

    def __init__(self, keep: int = 3) -> None:
        self._outputs: OrderedDict[int, Tensor] = OrderedDict()
        self._keep = keep

    def add(self, key: int, outputs: Tensor) -> None:
        self._outputs[key] = outputs
        while len(self._outputs) > self._keep:
            self._outputs.popitem(last=False)

    def emit(self, item: Emit) -> Tensor:
        (key, slot, weight), *rest = item.sources
        frame = self._outputs[key][slot]
        if not rest:
            return frame
        frame = frame * weight
        for key, slot, weight in rest:
            frame = frame + self._outputs[key][slot] * weight
        return frame


def plan(frames: Iterable[Frame], cuts: Iterable[int] = (), input_frames: int = 4) -> Iterator[Window[Frame] | Emit]:
    """The whole plan for a finite sequence, with scene cuts before the
    given frame indices. Streaming callers use `WindowPlanner` directly."""
    planner: WindowPlanner[Frame] = WindowPlanner(input_frames)
    cut_set = set(cuts)
    for index, frame in enumerate(frames):
        yield from planner.push(frame, cut=index in cut_set)
    yield from planner.finish()


def scene_change(previous: Tensor, current: Tensor, bins: int = 32) -> float:
    """How different two frames' brightness distributions are, in [0, 1].

    Half the L1 distance between normalised luma histograms: 0 for the same
    picture, 1 when no brightness level is shared. Camera and object motion
    barely move a histogram, a hard cut usually moves it a lot; that is
    why this beats a per-pixel difference, which fast motion also makes
    large. Frames are (3, H, W) uint8 or float in [0, 1].
    """
    return 0.5 * float((_luma_histogram(previous, bins) - _luma_histogram(current, bins)).abs().sum())


def _luma_histogram(frame: Tensor, bins: int) -> Tensor:
    frame = frame.float() / 255 if frame.dtype == torch.uint8 else frame.float()
    frame = frame[:, ::2, ::2]  # every other pixel is plenty for a histogram
    luma = 0.299 * frame[0] + 0.587 * frame[1] + 0.114 * frame[2]
    hist = torch.histc(luma, bins=bins, min=0.0, max=1.0)
    return hist / hist.sum()
