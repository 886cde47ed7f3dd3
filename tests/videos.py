"""Small generated videos for the tests, written with PyAV.

Every frame is a smooth moving pattern whose content says which frame it is
(`frame_value`), so a test can tell a repeated frame from a blended one
after a lossy round trip. A scene cut switches to a visibly different
pattern. Audio is a sine tone of the same duration as the video.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def pattern(index: int, width: int, height: int, scene: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: a diagonal gradient that drifts with `index`; scene 1
    is a different, darker pattern so that a blend across a cut shows."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    if scene % 2 == 0:
        base = 0.5 + 0.35 * np.sin((x + 2.0 * index) / 7.0) * np.cos((y - index) / 9.0)
        rgb = np.stack([base, 0.8 * base + 0.1, 0.6 - 0.4 * base], axis=-1)
    else:
        base = 0.2 + 0.15 * np.cos((x - 3.0 * index) / 5.0 + y / 11.0)
        rgb = np.stack([0.3 - base, base, 0.9 - base], axis=-1)
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


def make_video(
    path: Path | str,
    frames: int = 8,
    width: int = 48,
    height: int = 32,
    fps: Fraction | int = 24,
    *,
    audio: bool = False,
    cut_at: int | None = None,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    sample_rate: int = 48000,
    audio_codec: str = "aac",
) -> Path:
    """Write a short video. Frames from `cut_at` on belong to a second scene.

    The default libx264 at near-lossless quality keeps frame content close
    to `pattern`; yuv420p needs even sizes, so odd sizes use yuv444p.
    """
    path = Path(path)
    fps = Fraction(fps)
    if width % 2 or height % 2:
        pix_fmt = "yuv444p"
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        if codec == "libx264":
            video.options = {"crf": "4", "preset": "ultrafast"}
        audio_stream = None
        if audio:
            audio_stream = container.add_stream(audio_codec, rate=sample_rate)
            audio_stream.layout = "mono"
        for index in range(frames):
            scene = 1 if cut_at is not None and index >= cut_at else 0
            frame = av.VideoFrame.from_ndarray(pattern(index, width, height, scene), format="rgb24")
            frame.pts = index
            frame.time_base = 1 / fps
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio_stream is not None:
            _write_tone(container, audio_stream, seconds=float(frames / fps), sample_rate=sample_rate)
    return path


def _write_tone(container, stream, seconds: float, sample_rate: int) -> None:
    total = int(round(seconds * sample_rate))
    chunk = 1024
    fmt = stream.codec_context.format.name if stream.codec_context.format else "fltp"
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        t = (np.arange(start, start + n) / sample_rate).astype(np.float32)
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        if fmt == "s16":
            frame = av.AudioFrame.from_ndarray((tone * 32767).astype(np.int16), format="s16", layout="mono")
        else:
            frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = start
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def read_video(path: Path | str) -> tuple[list[np.ndarray], Fraction]:
    """All frames of a video as (H, W, 3) uint8 RGB, and its frame rate."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return frames, Fraction(stream.average_rate or stream.guessed_rate)


def stream_durations(path: Path | str) -> dict[str, float]:
    """Seconds of each stream type, from the packets (not the header)."""
    ends: dict[str, float] = {}
    starts: dict[str, float] = {}
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.pts is None or packet.stream.type not in ("video", "audio", "subtitle"):
                continue
            kind = packet.stream.type
            begin = float(packet.pts * packet.time_base)
            end = begin + float((packet.duration or 0) * packet.time_base)
            starts[kind] = min(starts.get(kind, begin), begin)
            ends[kind] = max(ends.get(kind, end), end)
    return {kind: ends[kind] - starts[kind] for kind in ends}
