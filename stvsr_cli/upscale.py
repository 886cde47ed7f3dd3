"""`upscale_video`: a video file in, a 4x, 2x-frame-rate video file out.

The stages run concurrently, joined by bounded queues so memory stays flat
and no stage waits on another in steady state:

    decode thread:  decode -> scene cuts                        --LR frame queue-->
    this thread:    windows -> network -> stitch (`stream.upscale_frames`)  --HR frame queue-->
    encode thread:  encode (ffmpeg, audio and subtitles copied)

The middle stage is the one `stvsr eval` runs too, so what eval scores is
what upscale writes.

Everything that can be checked before work starts is checked first (input,
output path, codec, weights, memory, one frame through the encoder), so a
bad option fails in a second, not after an hour. Any failure, or Ctrl-C,
aborts the encoder, which removes its temporary file: OUTPUT appears
complete or not at all.

Memory. Tiles bound the network's own memory, but not what grows with the
whole frame: each window's output frames (float32, the largest item), the
frames queued for the encoder and the encoder itself. `memory_plan`
estimates what each stage holds, from measured figures, and a run that
would not fit is refused before it starts, with the figure and what lowers
it (`check_memory`).
"""

from __future__ import annotations

import dataclasses
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
    is_frame_directory,
    open_writer,
    remove_leftovers,
    resolve_options,
    try_encoder,
)
from .errors import StvsrError
from .inference import Upscaler
from .stream import check_run_options, load_upscaler, upscale_frames
from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE
from .windows import DEFAULT_SCENE_THRESHOLD, scene_change

_QUEUE_WINDOWS = 4  # batches of windows the decoder may run ahead (a window needs 2 new frames)
_QUEUE_FRAMES = 16  # finished frames waiting for the encoder, at most
_QUEUE_BYTES = 256 << 20  # ... and at most this much of them, but 2 frames at least

# What the stages hold, measured on a 2-core CPU (PyTorch 2.14, fp32), for
# `memory_plan`. The network's activations for one tile, per LR pixel and
# per channel of the network: 45 KB per LR pixel for the small preset (32
# channels) and 78 KB for paper (64), peak RSS over one 96x96 window.
_ACTIVATION_BYTES_PER_CHANNEL = 1400
# ffmpeg encoding with libx264 (preset medium, its lookahead and reference
# frames): 169 MB peak RSS at 1024x576, 532 MB at 2048x1152, so about 205
# bytes per output pixel and 50 MB besides; libvpx-vp9 153 MB at 1024x576.
_ENCODER_BYTES_PER_PIXEL = 220
_ENCODER_BYTES = 64 << 20


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

    def __post_init__(self) -> None:
        check_run_options(self.tile, self.tile_overlap, self.batch)
        if not 0 <= self.scene_threshold <= 1:
            raise StvsrError(f"--scene-threshold must be from 0 to 1 (got {self.scene_threshold}); 0 turns it off")


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
    frames = is_frame_directory(output)
    check_memory(info, upscaler, options, frames=frames)
    # Resolved once here, so that what resolving says (8 bits for a deeper source) is said once.
    encode = options.encode if frames else resolve_options(options.encode, output, info.bit_depth)
    try_encoder(output, info, width=size[0], height=size[1], fps=fps, options=encode)
    total = 2 * info.frame_count if info.frame_count else None
    pipeline = _Pipeline(info, upscaler, options)
    if progress:
        progress(0, total)
    with open_writer(output, info, width=size[0], height=size[1], fps=fps, options=encode) as writer:
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
        self.output_frames = 0  # written so far
        self.scene_cuts = 0
        self._stop = threading.Event()
        self._errors: list[BaseException] = []

    def run(self, write: Callable[[np.ndarray], None], on_frame: Callable[[int], None]) -> int:
        input_queue: queue.Queue = queue.Queue(maxsize=_input_queue_frames(self.options.batch))
        frame_queue: queue.Queue = queue.Queue(maxsize=_output_queue_frames(self.info, self.upscaler.scale))

        def encode() -> None:
            for frame in self._drain(frame_queue):
                write(frame)
                self.output_frames += 1
                on_frame(self.output_frames)

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
        return self.output_frames

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


# ------------------------------------------------------------------ memory


def _input_queue_frames(batch: int) -> int:
    return _QUEUE_WINDOWS * batch * 2


def _output_frame_bytes(info: VideoInfo, scale: int) -> int:
    return info.width * scale * info.height * scale * 3 * (2 if info.bit_depth > 8 else 1)


def _output_queue_frames(info: VideoInfo, scale: int) -> int:
    return max(2, min(_QUEUE_FRAMES, _QUEUE_BYTES // _output_frame_bytes(info, scale)))


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes each stage of a run holds at its peak, by where they live:
    `host` (RAM) and `device` (the GPU's memory; empty on a CPU run, whose
    device stages are in `host`)."""

    host: dict[str, int]
    device: dict[str, int]


def memory_plan(info: VideoInfo, upscaler: Upscaler, options: UpscaleOptions, frames: bool = False) -> MemoryPlan:
    """What a run of `upscaler` over `info`'s video will hold, stage by
    stage, from the frame size, the options and measured figures (see the
    constants above); `frames` for PNG output, which has no video encoder."""
    config = upscaler.model.config
    lr_pixels = info.width * info.height
    out_pixels = lr_pixels * upscaler.scale**2
    deep = info.bit_depth > 8
    batch = options.batch
    # An LR frame is uint8 (H, W, 3), or float32 from a deep source.
    lr_frame = lr_pixels * 3 * (4 if deep else 1)
    held_lr = _input_queue_frames(batch) + config.input_frames * (batch + 1) + 2  # queue, planner, windows, decoder
    tile_pixels = lr_pixels if options.tile <= 0 else min(options.tile, info.width) * min(options.tile, info.height)
    window_outputs = config.output_frames * 3 * 4 * out_pixels  # float32
    frame_bytes = _output_frame_bytes(info, upscaler.scale)
    on_device = {
        "the network": _ACTIVATION_BYTES_PER_CHANNEL * config.channels * tile_pixels * batch,
        f"window outputs ({batch + 1} windows of {config.output_frames} frames)": (batch + 1) * window_outputs,
    }
    on_host = {
        "decoded frames": held_lr * lr_frame,
        "finished frames": _output_queue_frames(info, upscaler.scale) * frame_bytes + 2 * 3 * 4 * out_pixels,
        "the encoder (ffmpeg)": (2 * frame_bytes if frames
                                 else _ENCODER_BYTES + _ENCODER_BYTES_PER_PIXEL * out_pixels * (2 if deep else 1)),
    }
    if upscaler.device.type == "cpu":
        return MemoryPlan({**on_device, **on_host}, {})
    return MemoryPlan(on_host, on_device)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a new allocation: the GPU's free memory, or for the
    host (device 'cpu') what Linux reports as available; None when unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(info: VideoInfo, upscaler: Upscaler, options: UpscaleOptions, frames: bool = False) -> None:
    """Refuse a run that would not fit in memory (`memory_plan`), in one
    line: what it needs, where, the largest parts, and what would make it
    fit (a smaller --batch or --tile, or a smaller input)."""
    plan = memory_plan(info, upscaler, options, frames)
    for where, stages, device in (("memory", plan.host, torch.device("cpu")),
                                  (f"{upscaler.device} memory", plan.device, upscaler.device)):
        if not stages:
            continue
        available = available_memory(device)
        needed = sum(stages.values())
        if available is None or needed <= available:
            continue
        parts = ", ".join(f"{name} {_size(size)}" for name, size in sorted(stages.items(), key=lambda kv: -kv[1])[:3])
        raise StvsrError(
            f"upscaling {info.width}x{info.height} frames to {info.width * upscaler.scale}x"
            f"{info.height * upscaler.scale} needs about {_size(needed)} of {where} ({parts}), and "
            f"{_size(available)} is free; {_advice(info, upscaler, options, frames, where, available)}"
        )


def _advice(info: VideoInfo, upscaler: Upscaler, options: UpscaleOptions, frames: bool, where: str,
            available: int) -> str:
    """The smallest change that makes the run fit: --batch 1, a smaller
    --tile, or else an input scaled down to a size that fits."""
    def needed(info: VideoInfo, options: UpscaleOptions) -> int:
        plan = memory_plan(info, upscaler, options, frames)
        return sum((plan.host if where == "memory" else plan.device).values())

    single = dataclasses.replace(options, batch=1)
    lighter = [(single, "--batch 1")] if options.batch > 1 else []
    lighter += [(dataclasses.replace(single, tile=tile), f"--tile {tile}" + " --batch 1" * (options.batch > 1))
                for tile in (DEFAULT_TILE, 96, 64) if options.tile <= 0 or options.tile > tile]
    for changed, flags in lighter:
        if needed(info, changed) <= available:
            return f"use {flags}, or scale the input down first"
    width, height = info.width, info.height
    while width > 16 and height > 16:
        width, height = int(width * 0.95) // 2 * 2, int(height * 0.95) // 2 * 2
        if needed(dataclasses.replace(info, width=width, height=height), single) <= available:
            batch = " and use --batch 1" if options.batch > 1 else ""
            return f"scale the input down to at most {width}x{height} first{batch}"
    return "run it on a machine with more memory"


def _size(size: int) -> str:
    return f"{size / 2**30:.1f} GB" if size >= 2**30 else f"{size / 2**20:.0f} MB"
