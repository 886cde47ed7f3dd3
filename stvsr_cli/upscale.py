"""`upscale_video`: a video file in, a 4x, 2x-frame-rate video file out.

The stages run concurrently, joined by bounded queues so memory stays flat
and no stage waits on another in steady state:

    decode thread:  decode -> scene cuts                        --LR frame queue-->
    this thread:    windows -> network -> stitch (`stream.upscale_frames`)  --HR frame queue-->
    encode thread:  encode (ffmpeg, audio and subtitles copied)

The middle stage is the one `stvsr eval` runs too, so what eval scores is
what upscale writes.

Everything that can be checked before work starts is checked first (input,
output path, codec, weights, one frame through the encoder), so a bad
option fails in a second, not after an hour. Any failure, or Ctrl-C, aborts
the encoder, which removes its temporary file: OUTPUT appears complete or
not at all.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from .decode import VideoInfo, decode, probe
from .encode import (
    EncodeOptions,
    check_encoder,
    check_output,
    open_writer,
    remove_leftovers,
    try_encoder,
)
from .inference import Upscaler
from .stream import check_run_options, load_upscaler, upscale_frames
from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE
from .windows import DEFAULT_SCENE_THRESHOLD, scene_change

_QUEUE_WINDOWS = 4  # batches of windows the decoder may run ahead (a window needs 2 new frames)
_QUEUE_FRAMES = 16  # finished frames waiting for the encoder


@dataclass(frozen=True)
class UpscaleOptions:
    weights: Path | None = None  # None: the shipped default weights
    device: str = "auto"
    precision: str = "auto"
    tile: int = DEFAULT_TILE  # LR tile size; 0 runs whole frames
    tile_overlap: int = DEFAULT_OVERLAP
    batch: int = 1  # windows (or tiles) per forward pass
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD  # 0 turns scene-cut detection off
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    overwrite: bool = False


@dataclass(frozen=True)
class UpscaleResult:
    output: Path
    input_frames: int
    output_frames: int
    input_size: tuple[int, int]  # (width, height)
    output_size: tuple[int, int]
    input_fps: Fraction
    output_fps: Fraction
    scene_cuts: int
    seconds: float


# progress(frames written, total frames expected or None)
Progress = Callable[[int, "int | None"], None]


def upscale_video(
    input: str | os.PathLike,
    output: str | os.PathLike,
    options: UpscaleOptions = UpscaleOptions(),
    progress: Progress | None = None,
    *,
    upscaler: Upscaler | None = None,
) -> UpscaleResult:
    """Upscale `input` 4x in space and 2x in time into `output`.

    `output` is a video file (its extension picks the container) or a
    directory, which receives numbered PNG frames. Raises `StvsrError` for
    anything the user can fix; leaves no partial output on any failure.
    `upscaler`, an already loaded network, replaces options.weights, device
    and precision (`stvsr bench` times several runs of one network).
    """
    started = time.perf_counter()
    input = Path(input)
    output = os.fspath(output)  # kept as given: a trailing separator means a frame directory
    info = probe(input)
    check_output(input, output, overwrite=options.overwrite)
    check_encoder(options.encode, output)
    check_run_options(options.tile, options.tile_overlap, options.batch)
    remove_leftovers(output)
    if upscaler is None:
        upscaler = load_upscaler(options.weights, device=options.device, precision=options.precision)

    scale = upscaler.scale
    size = (info.width * scale, info.height * scale)
    fps = info.fps * 2
    try_encoder(output, info, width=size[0], height=size[1], fps=fps, options=options.encode)
    total = 2 * info.frame_count if info.frame_count else None
    pipeline = _Pipeline(info, upscaler, options)
    if progress:
        progress(0, total)
    with open_writer(output, info, width=size[0], height=size[1], fps=fps, options=options.encode) as writer:
        written = pipeline.run(writer.write, lambda done: progress and progress(done, total))
    return UpscaleResult(
        output=Path(output),
        input_frames=pipeline.input_frames,
        output_frames=written,
        input_size=(info.width, info.height),
        output_size=size,
        input_fps=info.fps,
        output_fps=fps,
        scene_cuts=pipeline.scene_cuts,
        seconds=time.perf_counter() - started,
    )


_DONE = object()  # end of a queue's stream


class _Pipeline:
    """The three concurrent stages of one run, and how they stop together."""

    def __init__(self, info: VideoInfo, upscaler: Upscaler, options: UpscaleOptions) -> None:
        self.info, self.upscaler, self.options = info, upscaler, options
        self.high_bit_depth = info.bit_depth > 8
        self.input_frames = 0
        self.scene_cuts = 0
        self._stop = threading.Event()
        self._errors: list[BaseException] = []

    def run(self, write: Callable[[np.ndarray], None], on_frame: Callable[[int], None]) -> int:
        input_queue: queue.Queue = queue.Queue(maxsize=_QUEUE_WINDOWS * self.options.batch * 2)
        frame_queue: queue.Queue = queue.Queue(maxsize=_QUEUE_FRAMES)
        written = [0]

        def encode() -> None:
            for frame in self._drain(frame_queue):
                write(frame)
                written[0] += 1
                on_frame(written[0])

        threads = [
            threading.Thread(target=self._guard, args=(self._decode, input_queue), name="stvsr-decode", daemon=True),
            threading.Thread(target=self._guard, args=(encode,), name="stvsr-encode", daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            self._guard(self._upscale, input_queue, frame_queue)
            for thread in threads:
                thread.join()
        except BaseException:  # Ctrl-C while joining: still stop the other stages
            self._stop.set()
            raise
        if self._errors:
            raise self._errors[0]
        return written[0]

    def _guard(self, stage: Callable, *args) -> None:
        """Run a stage; on failure record it and stop the others."""
        try:
            stage(*args)
        except BaseException as error:
            if not self._stop.is_set():
                self._errors.append(error)
            self._stop.set()

    def _put(self, target: queue.Queue, item: object) -> None:
        while not self._stop.is_set():
            try:
                target.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _drain(self, source: queue.Queue) -> Iterator:
        while True:
            try:
                item = source.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    raise _Stopped from None
                continue
            if item is _DONE:
                return
            yield item

    def _decode(self, input_queue: queue.Queue) -> None:
        """Decode thread: frames -> (C, H, W) tensors, each with its scene-cut flag."""
        threshold = self.options.scene_threshold
        previous = None
        for array in decode(self.info):
            frame = torch.from_numpy(array).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)
            if self.high_bit_depth:  # uint16 has few torch kernels: go to float at once
                frame = frame.to(torch.int32).float().div_(65535)
            cut = previous is not None and threshold > 0 and scene_change(previous, frame) > threshold
            self.scene_cuts += cut
            self._put(input_queue, (frame, cut))
            previous = frame
            self.input_frames += 1
        self._put(input_queue, _DONE)

    def _upscale(self, input_queue: queue.Queue, frame_queue: queue.Queue) -> None:
        """Network thread: windows, network and stitch, output frames in order."""
        frames = upscale_frames(self._drain(input_queue), self.upscaler, tile=self.options.tile,
                                overlap=self.options.tile_overlap, batch=self.options.batch)
        for frame in frames:
            self._put(frame_queue, self._to_array(frame))
        self._put(frame_queue, _DONE)

    def _to_array(self, frame: Tensor) -> np.ndarray:
        """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, or uint16 for
        high-bit-depth sources; quantised on the device, so only the final
        bytes cross to the host."""
        peak = 65535 if self.high_bit_depth else 255
        frame = frame.permute(1, 2, 0).mul(peak).round_()
        if self.high_bit_depth:
            return frame.to(torch.int32).cpu().numpy().astype(np.uint16)
        return frame.to(torch.uint8).cpu().numpy()


class _Stopped(Exception):
    """Another stage failed or was interrupted; this one stops quietly."""
