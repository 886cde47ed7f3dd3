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

import bisect
import dataclasses
import itertools
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

from . import __version__
from .decode import VideoInfo, decode, probe
from .defaults import DEFAULT_SEGMENT_SECONDS
from .distributed import Ranks
from .encode import (
    EncodeOptions,
    FrameWriter,
    check_encoder,
    check_output,
    is_frame_directory,
    join_segments,
    open_segment_writer,
    remove_leftovers,
    resolve_options,
    say_what_is_lost,
    segment_suffix,
    try_encoder,
)
from .errors import StvsrError
from .segments import (
    Segment,
    WorkFolder,
    describe,
    file_facts,
    frame_range,
    plan_segments,
)
from .inference import Upscaler
from .stream import check_run_options, load_upscaler, upscale_frames
from .tiling import DEFAULT_OVERLAP, DEFAULT_TILE
from .windows import DEFAULT_SCENE_THRESHOLD, scene_change

log = logging.getLogger("stvsr")

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
    self_ensemble: bool = False  # average over the 8 rotations and flips (`Upscaler`)
    tile: int = DEFAULT_TILE  # LR tile size; 0 runs whole frames
    tile_overlap: int = DEFAULT_OVERLAP
    batch: int = 1  # windows (or tiles) per forward pass
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD  # 0 turns scene-cut detection off
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    overwrite: bool = False
    start: float = 0.0  # seconds into the source, as ffmpeg's -ss
    duration: float | None = None  # seconds from start, as ffmpeg's -t; None: to the end
    end: float | None = None  # or where to stop, as ffmpeg's -to
    segment: float = DEFAULT_SEGMENT_SECONDS  # seconds of source a segment (the unit of --resume)
    resume: bool = False  # continue the unfinished run into the same output

    def __post_init__(self) -> None:
        check_run_options(self.tile, self.tile_overlap, self.batch)
        if not 0 <= self.scene_threshold <= 1:
            raise StvsrError(f"--scene-threshold must be from 0 to 1 (got {self.scene_threshold}); 0 turns it off")
        if self.segment <= 0:
            raise StvsrError(f"--segment must be more than 0 seconds (got {self.segment:g})")


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
    segments: int = 1
    resumed: int = 0  # segments an earlier run had finished


# progress(frames written, total frames expected or None)
Progress = Callable[[int, "int | None"], None]


def upscale_video(
    input: str | os.PathLike,
    output: str | os.PathLike,
    options: UpscaleOptions = UpscaleOptions(),
    progress: Progress | None = None,
    *,
    upscaler: Upscaler | None = None,
    ranks: Ranks = Ranks(),
) -> UpscaleResult:
    """Upscale `input` 4x in space and 2x in time into `output`.

    `output` is a video file (its extension picks the container) or a
    directory, which receives numbered PNG frames. Raises `StvsrError` for
    anything the user can fix; leaves no partial output on any failure.
    `upscaler`, an already loaded network, replaces options.weights, device
    and precision (`stvsr bench` times several runs of one network).

    The work is done in segments (`segments.py`), kept in a work folder
    beside `output` until the end, so a run stopped by anything can be
    continued with `resume=True`. `ranks`, the processes of a torchrun
    launch, share the segments out; rank 0 joins them. Every process
    returns the same figures, but only rank 0 writes `output`.
    """
    started = time.perf_counter()
    input = Path(input)
    output = os.fspath(output)  # kept as given: a trailing separator means a frame directory
    info = probe(input)
    check_output(input, output, overwrite=options.overwrite)
    check_encoder(options.encode, output)
    first, end = frame_range(info.fps, options.start, options.duration, options.end)
    if ranks.leader:
        remove_leftovers(output)
    if upscaler is None:
        upscaler = load_upscaler(options.weights, device=ranks.device(options.device), precision=options.precision,
                                 self_ensemble=options.self_ensemble)
    plan = _plan(input, output, info, upscaler, options, first, end)

    work = WorkFolder(output)
    todo = ranks.share(lambda: work.prepare(plan.facts, plan.segments, options.resume))
    if ranks.leader:
        say_what_is_lost(info, output, plan.fps)
    mine = [plan.segments[i] for i in ranks.split(todo)]
    pipeline = _Pipeline(info, upscaler, options)
    done = _make_share(pipeline, work, plan, mine, ranks, progress)
    if ranks.leader:
        _join(work, plan, done, output)
    written = sum(done.values())
    return UpscaleResult(
        output=Path(output),
        input_frames=written // 2,
        output_frames=written,
        input_size=(info.width, info.height),
        output_size=plan.size,
        input_fps=info.fps,
        output_fps=plan.fps,
        scene_cuts=pipeline.scene_cuts,
        seconds=time.perf_counter() - started,
        segments=len(plan.segments),
        resumed=len(plan.segments) - len(todo),
    )


@dataclass(frozen=True)
class _Plan:
    """What a run makes, settled before any frame is decoded."""

    info: VideoInfo
    first: int  # source frames [first, end) (end None: to the end of the video)
    end: int | None
    size: tuple[int, int]  # output (width, height)
    fps: Fraction  # output frame rate
    encode: EncodeOptions  # resolved for this output
    segments: list[Segment]
    suffix: str  # of each segment's file
    facts: dict  # what the work folder records, for --resume to compare


def _plan(input: Path, output: str, info: VideoInfo, upscaler: Upscaler, options: UpscaleOptions,
          first: int, end: int | None) -> _Plan:
    """Check that the run fits and its encoder works, then cut it into segments."""
    size = (info.width * upscaler.scale, info.height * upscaler.scale)
    fps = info.fps * 2
    frames = is_frame_directory(output)
    check_memory(info, upscaler, options, frames=frames)
    # Resolved once here, so that what resolving says (8 bits for a deeper source) is said once.
    encode = options.encode if frames else resolve_options(options.encode, output, info.bit_depth)
    try_encoder(output, info, width=size[0], height=size[1], fps=fps, options=encode)

    # A GIF's frames cannot be joined without re-encoding: one segment.
    one = not frames and Path(output).suffix.lower() == ".gif"
    length = 1 << 62 if one else max(1, round(options.segment * info.fps))
    facts = {
        "stvsr": __version__, "input": file_facts(input), "output": Path(output).name,
        "weights": file_facts(options.weights),
        "network": f"{upscaler.device.type} {upscaler.dtype}" + (" self-ensemble" if upscaler.self_ensemble else ""),
        "options": describe(dataclasses.replace(options, overwrite=False, resume=False, device="", precision="",
                                                self_ensemble=False, weights=None, encode=encode)),
        "frames": [first, end], "segment_frames": length,
    }
    return _Plan(info, first, end, size, fps, encode, plan_segments(first, end, info.frame_count, length),
                 segment_suffix(output, encode), facts)


def _make_share(pipeline: _Pipeline, work: WorkFolder, plan: _Plan, mine: list[Segment], ranks: Ranks,
                progress: Progress | None) -> dict[int, int]:
    """Make this process's segments into the work folder; the frames each
    finished segment holds, by index, once every process is done. A failure
    here or in another process raises, keeping the finished segments for
    --resume (or removing the folder when none is finished)."""
    info, size = plan.info, plan.size

    def open_segment(segment: Segment) -> FrameWriter:
        return open_segment_writer(work.segment_path(segment.index, plan.suffix), info, width=size[0],
                                   height=size[1], fps=plan.fps, options=plan.encode,
                                   first_number=2 * (segment.first - plan.first))

    error = None
    work.lock()
    try:
        total = sum(2 * (s.end - s.first) if s.end is not None else
                    (2 * (info.frame_count - s.first) if info.frame_count else 0) for s in mine) or None
        if progress:
            progress(0, total)
        pipeline.run(mine, open_segment, work.record, lambda done: progress and progress(done, total))
    except StvsrError as failure:
        error = str(failure)
        raise
    except BaseException as failure:
        error = f"{type(failure).__name__}: {failure}"
        raise
    finally:
        # Every process says how its share went; a failure anywhere stops the join.
        if ranks.world > 1:
            failures = [(rank, e) for rank, e in enumerate(ranks.gather(error)) if e is not None]
        else:
            failures = []
        work.unlock()
        done = work.finished() if work.path.exists() else {}
        if (error is not None or failures) and ranks.leader:
            if not done:  # nothing to resume: leave nothing behind
                work.remove()
            elif len(done) < len(plan.segments):
                log.warning("%d of %d segments are done and kept in %s; run the same command with --resume to "
                            "continue", len(done), len(plan.segments), work.path)
    if failures:
        rank, message = failures[0]
        raise StvsrError(f"process {rank} of {ranks.world} failed: {message}")
    return done


def _join(work: WorkFolder, plan: _Plan, done: dict[int, int], output: str) -> None:
    """Join the finished segments into `output`, with the source's audio and
    subtitles, and remove the work folder; keep it if the join fails."""
    files = [work.segment_path(s.index, plan.suffix) for s in plan.segments if done.get(s.index)]
    written = sum(done.values())
    try:
        join_segments(files, output, plan.info, fps=plan.fps, options=plan.encode, first_frame=plan.first,
                      frames=written // 2 if plan.first or plan.end is not None else None)
    except BaseException:
        log.warning("all %d segments are done and kept in %s; once the cause is fixed, the same command with "
                    "--resume joins them", len(plan.segments), work.path)
        raise
    work.remove()


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
        self._enough = threading.Event()  # every wanted frame is made: the decoder stops early
        self._errors: list[BaseException] = []

    def run(self, segments: list[Segment], open_segment: Callable[[Segment], FrameWriter],
            record: Callable[[int, int], None], on_frame: Callable[[int], None]) -> int:
        """Make the output frames of `segments`, each into its own writer
        (`open_segment`, opened at its first frame, so a segment past the
        end of the video has none); `record(index, frames)` once each is
        closed. Frames of other segments are planned, not upscaled."""
        if not segments:
            return 0
        input_queue: queue.Queue = queue.Queue(maxsize=_input_queue_frames(self.options.batch))
        frame_queue: queue.Queue = queue.Queue(maxsize=_output_queue_frames(self.info, self.upscaler.scale))
        self._input = input_queue
        self._first = segments[0].first
        self._last = segments[-1].end  # the decoder needs no frame past a few after this

        def encode() -> None:
            writer, current, count = None, None, 0
            finished: dict[int, int] = {}
            closing: list[threading.Thread] = []

            def close(writer: FrameWriter, segment: Segment, count: int) -> None:
                writer.close()
                record(segment.index, count)
                finished[segment.index] = count

            try:
                for index, frame in self._drain(frame_queue):
                    segment = current if current is not None and current.wants(index) else \
                        next(s for s in segments if s.wants(index))
                    if segment is not current:
                        if writer is not None:
                            # Closing flushes the encoder's lookahead: in the background, so the next
                            # segment's frames keep flowing and the network never waits on it.
                            closing.append(threading.Thread(target=self._guard, args=(close, writer, current, count),
                                                            name="stvsr-close", daemon=True))
                            closing[-1].start()
                        writer, current, count = open_segment(segment), segment, 0
                    writer.write(frame)
                    count += 1
                    self.output_frames += 1
                    on_frame(self.output_frames)
                if writer is not None:
                    writer, last = None, writer
                    close(last, current, count)
            finally:
                if writer is not None:
                    writer.abort()
                for thread in closing:
                    thread.join()
            if self._errors or self._stop.is_set():
                return
            for segment in segments:  # past the end of the video
                if segment.index not in finished:
                    record(segment.index, 0)

        threads = [
            threading.Thread(target=self._guard, args=(self._decode, input_queue), name="stvsr-decode", daemon=True),
            threading.Thread(target=self._guard, args=(encode,), name="stvsr-encode", daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            self._guard(self._upscale, segments, input_queue, frame_queue)
            for thread in threads:
                thread.join()
        except BaseException:  # Ctrl-C while joining: still stop the other stages
            self._stop.set()
            for thread in threads:  # the encoder thread aborts its segment's ffmpeg within 0.1 s
                thread.join(timeout=10)
            raise
        if self._errors:
            raise self._errors[0]
        return self.output_frames

    def _guard(self, stage: Callable, *args) -> None:
        """Run a stage; on failure record it and stop the others."""
        try:
            stage(*args)
        except _Stopped:
            if not self._enough.is_set():
                self._stop.set()
        except BaseException as error:
            if not self._stop.is_set():
                self._errors.append(error)
            self._stop.set()

    def _put(self, target: queue.Queue, item: object) -> None:
        while not self._stop.is_set() and not (target is self._input and self._enough.is_set()):
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
        frames = decode(self.info)
        try:
            for index, array in enumerate(frames):
                frame = torch.from_numpy(array).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)
                if self.high_bit_depth:  # uint16 has few torch kernels: go to float at once
                    frame = frame.to(torch.int32).float().div_(65535)
                cut = previous is not None and threshold > 0 and scene_change(previous, frame) > threshold
                if index >= self._first and (self._last is None or index < self._last):
                    self.scene_cuts += cut
                    self.input_frames += 1
                self._put(input_queue, (frame, cut))
                previous = frame
        finally:
            frames.close()
        self._put(input_queue, _DONE)

    def _upscale(self, segments: list[Segment], input_queue: queue.Queue, frame_queue: queue.Queue) -> None:
        """Network thread: windows, network and stitch, the wanted output frames in order."""
        starts = [2 * segment.first for segment in segments]  # segments are in order

        def wanted(k: int) -> bool:
            i = bisect.bisect_right(starts, k) - 1
            return i >= 0 and segments[i].wants(k)

        indices = itertools.chain.from_iterable(
            s.outputs() if s.end is not None else itertools.count(2 * s.first) for s in segments)
        last = 2 * segments[-1].end - 1 if segments[-1].end is not None else None
        frames = upscale_frames(self._drain(input_queue), self.upscaler, tile=self.options.tile,
                                overlap=self.options.tile_overlap, batch=self.options.batch, wanted=wanted)
        for index, frame in zip(indices, frames):
            self._put(frame_queue, (index, self._to_array(frame)))
            if index == last:
                self._enough.set()  # the decoder may stop: nothing after this is wanted
                break
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
    if upscaler.self_ensemble:  # beside a pass's output, counted above: the sum so far and the pass turned back
        on_device["self-ensemble (the sum and a pass turned back)"] = 2 * batch * window_outputs
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
