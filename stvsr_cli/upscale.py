"""`upscale_video`: a video file in, a 4x, 2x-frame-rate video file out.

The stages run concurrently, joined by bounded queues so memory stays flat
and no stage waits on another in steady state:

    decode thread:  decode -> scene cuts -> windows (plan)   --plan queue-->
    this thread:    network (tiled, batched) -> stitch         --frame queue-->
    encode thread:  encode (ffmpeg, audio and subtitles copied)

Everything that can be checked before work starts is checked first (input,
output path, codec, weights), so a bad option fails in a second, not after
an hour. Any failure, or Ctrl-C, aborts the encoder, which removes its
temporary file: OUTPUT appears complete or not at all.
"""

from __future__ import annotations

import logging
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
from .encode import EncodeOptions, check_encoder, check_output, open_writer
from .errors import StvsrError
from .inference import Upscaler
from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE, upscale_tiled
from .weights import default_weights_path, is_untrained
from .windows import DEFAULT_SCENE_THRESHOLD, Emit, Stitcher, Window, WindowPlanner, scene_change

log = logging.getLogger("stvsr")

_QUEUE_WINDOWS = 4  # batches of plan items the decoder may run ahead
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
) -> UpscaleResult:
    """Upscale `input` 4x in space and 2x in time into `output`.

    `output` is a video file (its extension picks the container) or a
    directory, which receives numbered PNG frames. Raises `StvsrError` for
    anything the user can fix; leaves no partial output on any failure.
    """
    started = time.perf_counter()
    input = Path(input)
    output = os.fspath(output)  # kept as given: a trailing separator means a frame directory
    info = probe(input)
    check_output(input, output, overwrite=options.overwrite)
    check_encoder(options.encode, output)
    if options.batch < 1:
        raise StvsrError(f"--batch must be at least 1 (got {options.batch})")
    if options.tile != 0 and options.tile < 2 * options.tile_overlap + 8:
        raise StvsrError(f"--tile {options.tile} is too small; use 0 (no tiling) or at least {2 * options.tile_overlap + 8}")
    weights = Path(options.weights) if options.weights is not None else default_weights_path()
    upscaler = Upscaler.from_weights(weights, device=options.device, precision=options.precision)
    if is_untrained(weights):
        log.warning(f"{weights.name} is an untrained placeholder: the output shows what the pipeline does, not a real upscale")

    scale = upscaler.scale
    size = (info.width * scale, info.height * scale)
    fps = info.fps * 2
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
        plan_queue: queue.Queue = queue.Queue(maxsize=_QUEUE_WINDOWS * self.options.batch * 4)
        frame_queue: queue.Queue = queue.Queue(maxsize=_QUEUE_FRAMES)
        written = [0]

        def encode() -> None:
            for frame in self._drain(frame_queue):
                write(frame)
                written[0] += 1
                on_frame(written[0])

        threads = [
            threading.Thread(target=self._guard, args=(self._decode_and_plan, plan_queue), name="stvsr-decode", daemon=True),
            threading.Thread(target=self._guard, args=(encode,), name="stvsr-encode", daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            self._guard(self._upscale_and_stitch, plan_queue, frame_queue)
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

    def _decode_and_plan(self, plan_queue: queue.Queue) -> None:
        """Decode thread: frames -> (C, H, W) tensors -> cuts -> plan items."""
        planner: WindowPlanner[Tensor] = WindowPlanner(self.upscaler.input_frames)
        threshold = self.options.scene_threshold
        previous = None
        for array in decode(self.info):
            frame = torch.from_numpy(array).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)
            if self.high_bit_depth:  # uint16 has few torch kernels: go to float at once
                frame = frame.to(torch.int32).float().div_(65535)
            cut = previous is not None and threshold > 0 and scene_change(previous, frame) > threshold
            self.scene_cuts += cut
            for item in planner.push(frame, cut=cut):
                self._put(plan_queue, item)
            previous = frame
            self.input_frames += 1
        for item in planner.finish():
            self._put(plan_queue, item)
        self._put(plan_queue, _DONE)

    def _upscale_and_stitch(self, plan_queue: queue.Queue, frame_queue: queue.Queue) -> None:
        """Network thread: run windows `batch` at a time, then assemble the
        output frames the plan asks for, in order."""
        # A batch's emits name its own windows and at most the last window
        # of the batch before (a blend of two neighbours): keep that many.
        stitcher = Stitcher(keep=self.options.batch + 1)
        pending: list[Window[Tensor] | Emit] = []
        windows = 0
        for item in self._drain(plan_queue):
            pending.append(item)
            windows += isinstance(item, Window)
            if windows == self.options.batch:
                self._run(pending, stitcher, frame_queue)
                pending, windows = [], 0
        self._run(pending, stitcher, frame_queue)
        self._put(frame_queue, _DONE)

    def _run(self, items: list[Window[Tensor] | Emit], stitcher: Stitcher, frame_queue: queue.Queue) -> None:
        windows = [item for item in items if isinstance(item, Window)]
        if windows:
            frames = torch.stack([torch.stack(window.frames) for window in windows])  # (B, n+1, 3, H, W)
            outputs = upscale_tiled(
                self.upscaler,
                frames,
                scale=self.upscaler.scale,
                tile=self.options.tile,
                overlap=self.options.tile_overlap,
                batch=self.options.batch,
            )  # (B, 2n+1, 3, 4H, 4W) float in [0, 1]
            for window, output in zip(windows, outputs):
                stitcher.add(window.key, output)
        for item in items:
            if isinstance(item, Emit):
                self._put(frame_queue, self._to_array(stitcher.emit(item)))

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
