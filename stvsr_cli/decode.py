"""Decode: a video file in, constant-rate RGB frames out, streamed.

`probe` reads what the later stages need to know about a file (size, frame
rate, colour, rotation, the other streams the encoder will copy) and turns
every way a file can be unusable into one `StvsrError`. `decode` then yields
the frames one at a time, so memory stays flat however long the video is.
Training reads short runs of frames at random places instead
(`count_frames`, `read_frames`), with the same colour conversion.

Colour. Frames come out as RGB in the source's own colour space: the YUV->RGB
matrix and range are the file's (or, when it does not say, the guess players
make), and nothing converts primaries or transfer, so an HDR (PQ/HLG) source
stays PQ/HLG-coded and the encoder writes the same tags back. swscale
upsamples the chroma; the matrix itself is applied here, because swscale's
16-bit RGB output stops short of white (65283 for limited-range input, 65472
for full-range 10-bit: it scales by 255/256 or 1023/1024), and a 10-bit
source must reach the full 0..65535 to keep its precision and its levels.

Timing. The network needs frames on a constant-rate grid; a variable frame
rate file is put on one by repeating and dropping frames (with one warning).
A clock that restarts (recordings joined end to end) or, in a container
whose clock may jump (MPEG-TS/PS, Ogg, live FLV), leaps far ahead does not
mean a pause: the grid restarts there instead, as the ffmpeg command line
does for the audio the encoder copies from the same file.

Rotation. Frames are yielded as coded, never rotated: `VideoInfo.rotation`
carries the display rotation and the encoder copies it into the output, so
players turn the upscaled video the same way they turned the source.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import StvsrError

try:
    import av
    from av.video.reformatter import Interpolation, VideoReformatter
except ImportError as error:  # a dependency, but training and scoring frame folders run without it
    raise StvsrError(f"reading video files needs PyAV, which does not import here ({error}); "
                     "install it (pip install av) or give folders of frames") from error

log = logging.getLogger("stvsr")


@dataclass(frozen=True)
class ColorInfo:
    """How the source's pixel values are to be read, with ffmpeg's names.

    `matrix` is the YUV->RGB matrix `decode` actually uses: the file's tag,
    or when the file has none (or one stvsr cannot apply) the guess players
    make: bt709 for HD (height >= 720), smpte170m (BT.601) below. RGB
    sources have matrix 'gbr'. `range` is 'tv' (limited) or 'pc' (full);
    yuvj* pixel formats are full range, untagged YUV is limited. `primaries`
    and `transfer` are None when the file does not say.
    """

    matrix: str
    range: str
    primaries: str | None
    transfer: str | None
    matrix_tagged: bool


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` found; `decode` and the encoder work from it.

    `width`/`height` are the coded frame size, before display rotation.
    `fps` is the constant rate `decode` delivers frames at. `frame_count` is
    an estimate for a progress bar. `start_time` is the seconds from the
    container's earliest stream start to the first video frame, for keeping
    audio in sync. `rotation` is the display rotation in degrees,
    counterclockwise as PyAV reports it (90 means turn the coded picture a
    quarter turn counterclockwise to show it; 0, 90, 180 or -90).

    What the upscale cannot carry over, so that the encoder can say so or
    keep it: `alpha`, whether the frames have an alpha channel (the network
    sees RGB only); `interlaced`, the field order of interlaced video ('top
    field first' ...) or None for progressive; `timecode`, the start
    timecode ('01:00:00:12', ';' before the frames for drop-frame) or None.
    """

    path: Path
    container: str
    width: int
    height: int
    fps: Fraction
    frame_count: int | None
    duration: float | None
    start_time: float
    pix_fmt: str
    bit_depth: int
    color: ColorInfo
    rotation: int
    audio_codecs: tuple[str, ...]
    subtitle_codecs: tuple[str, ...]
    alpha: bool = False
    interlaced: str | None = None
    timecode: str | None = None


def probe(path: str | os.PathLike) -> VideoInfo:
    """Open `path` and describe its video stream, or raise StvsrError saying
    why it cannot be upscaled. Decodes the first frame, because only frames
    carry the display rotation in PyAV."""
    path = Path(path)
    _check_readable(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        first = _first_frame(container, stream)
        source = first if first is not None else stream.codec_context
        if source.format is None:
            raise StvsrError(
                f"{path}: its {stream.codec_context.name} video stream could not be decoded at all; "
                "the file is damaged, check that it plays in a video player"
            )
        pix_fmt = source.format.name
        bit_depth = max(component.bits for component in source.format.components)
        fps = _frame_rate(container, stream, path)
        declared = _declared_seconds(stream)
        duration = declared or (container.duration / av.time_base if container.duration else None)
        frame_count = _declared_frames(stream, fps) or (round(duration * fps) if duration else None)
        return VideoInfo(
            path=path,
            container=container.format.name,
            width=source.width,
            height=source.height,
            fps=fps,
            frame_count=frame_count,
            duration=duration,
            start_time=_start_time(container, stream, first),
            pix_fmt=pix_fmt,
            bit_depth=bit_depth,
            color=_color_info(source, pix_fmt, source.height, path),
            rotation=_rotation(first),
            audio_codecs=tuple(_codec_name(s) for s in container.streams.audio),
            subtitle_codecs=tuple(_codec_name(s) for s in container.streams.subtitles),
            alpha=_has_alpha(source.format, stream),
            interlaced=_interlaced(stream, first),
            timecode=_timecode(container, stream),
        )


def decode(info: VideoInfo) -> Iterator[np.ndarray]:
    """Yield the frames of `info.path` as (H, W, 3) RGB arrays on a grid of
    `info.fps`: uint8 when `info.bit_depth` <= 8, else uint16 over 0..65535.

    A frame lands in the grid slot nearest its timestamp, counted from the
    first frame. A skipped slot repeats the previous frame, a second frame in
    a slot is dropped; for constant-rate input this changes nothing. Frames
    without timestamps fill the next slot, and so does the first frame after
    a clock jump (`_clock_jumped`), where the grid starts again. Raises
    StvsrError for a damaged file, one with no decodable frame, or one that
    ends well before its declared length (after yielding what it could).
    """
    reformatter = VideoReformatter()
    slot = repeated = dropped = decoded = jumps = 0
    irregular_at: int | None = None  # the decoded frame at which the first repeat or drop happened
    origin: Fraction | None = None
    last_time: Fraction | None = None
    previous: np.ndarray | None = None
    with _open(info.path) as container:
        stream = _video_stream(container, info.path)
        stream.thread_type = "AUTO"
        may_leap = bool(container.format.flags & av.format.Flags.ts_discont.value)
        for frame in _frames(container, stream, info.path):
            decoded += 1
            if frame.pts is None:
                target = slot
            else:
                time = frame.pts * stream.time_base
                if last_time is not None and _clock_jumped(time - last_time, info, may_leap, decoded):
                    jumps += 1
                    origin = None
                if origin is None:  # the first timestamped frame (after a jump) fixes the grid
                    origin = time - slot / info.fps
                last_time = time
                target = math.floor((time - origin) * info.fps + Fraction(1, 2))
            if target != slot and irregular_at is None:
                irregular_at = decoded
            if target < slot:
                dropped += 1
                continue
            rgb = frame_to_rgb(frame, info, reformatter)
            for _ in range(target - slot):
                yield previous.copy()
            repeated += target - slot
            yield rgb
            previous, slot = rgb, target + 1
        expected = _declared_frames(stream, info.fps)

    if decoded == 0:
        raise StvsrError(
            f"{info.path}: no frames could be decoded; the video stream is empty or damaged, "
            "check that the file plays in a video player"
        )
    # After a clock jump the declared length, which the demuxer derives from
    # the first and last timestamps, no longer measures the video.
    if expected is not None and not jumps and expected - slot > max(2, expected / 100):
        raise StvsrError(
            f"{info.path} looks truncated: decoded {slot} of {expected} frames; copy or download it again, "
            f'or to upscale what is there, re-mux it first: ffmpeg -i "{info.path}" -c copy fixed.mkv'
        )
    # A file cut short (or damaged at its end) loses the frames that
    # reordering shows just before the last ones that decode: gaps there are
    # no sign of a variable frame rate, only of the ending.
    if irregular_at is not None and irregular_at <= decoded - _REORDERED_TAIL:
        log.warning(
            "%s has a variable frame rate; made it constant at %s fps by repeating %d and dropping %d frames",
            info.path, f"{float(info.fps):.5g}", repeated, dropped,
        )


def count_frames(info: VideoInfo) -> int:
    """The frames of the video stream as its header counts them, or as its
    packets do where the header does not: exact, for training's random access
    (`VideoInfo.frame_count` is an estimate for a progress bar)."""
    with _open(info.path) as container:
        stream = _video_stream(container, info.path)
        return stream.frames or sum(1 for packet in container.demux(stream) if packet.size)


def read_frames(info: VideoInfo, start: int, count: int) -> list[np.ndarray]:
    """Frames `start` .. `start + count - 1` as `frame_to_rgb` gives them
    (fewer at the end of the video), for training.

    Seeks to the key frame before `start` and decodes forward to it; frames
    are matched by their presentation time at the stream's frame rate. Not
    `decode`'s constant-rate grid: training reads videos whose frames are
    evenly spaced already, and a run of them from anywhere in the file.
    """
    reformatter = VideoReformatter()
    frames: list[np.ndarray] = []
    with _open(info.path) as container:
        stream = _video_stream(container, info.path)
        rate = stream.average_rate or stream.guessed_rate
        step = 1 / (rate * stream.time_base)  # one frame in time-base units
        target = (stream.start_time or 0) + int(round(start * step))
        try:
            container.seek(target, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.pts is not None and frame.pts < target - step / 2:
                    continue
                frames.append(frame_to_rgb(frame, info, reformatter))
                if len(frames) == count:
                    break
        except av.FFmpegError as error:
            raise StvsrError(f"{info.path}: decoding failed near frame {start} ({error})") from None
    return frames


# The last frames a cut can leave after a gap: the reference frames that B
# frames are shown between (x264's default B pyramid holds back two), and the
# frame after them. Cutting x264 files at 30% to 90% of their length made
# gaps only there (in MKV and MPEG-TS).
_REORDERED_TAIL = 3


# A forward leap longer than this, in a container whose clock may jump, is a
# discontinuity rather than a pause: the ffmpeg command line's own threshold
# (-dts_delta_threshold) for such containers, so the video keeps in step with
# the audio ffmpeg copies. Elsewhere timestamps are authored and a long gap is
# a real pause (a screen recording of a still screen), filled by repeats.
_MAX_LEAP = Fraction(10)


def _clock_jumped(gap: Fraction, info: VideoInfo, may_leap: bool, index: int) -> bool:
    """Whether `gap`, the step from the previous frame's timestamp, is a
    clock jump rather than timing. Going back more than a slot (a second
    recording appended restarts its clock) would drop every frame that
    follows; leaping ahead more than `_MAX_LEAP` would repeat one frame
    thousands of times, so it is taken for a discontinuity, with a warning."""
    if gap < -1 / info.fps:
        return True
    if may_leap and gap > _MAX_LEAP:
        log.warning(
            "%s: the timestamps leap %.1f s ahead at frame %d; taking it for a clock discontinuity, not a pause, "
            "and going on without a gap",
            info.path, float(gap), index,
        )
        return True
    return False


# The file: opening it, choosing the stream, reading frames and declarations.


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise StvsrError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise StvsrError(f"{path} is a directory; pass a video file")
    try:
        path.open("rb").close()
    except OSError as error:
        raise StvsrError(f"cannot read {path} ({error.strerror}); check its permissions") from error


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), metadata_errors="replace")  # not every file's tags are UTF-8
    except av.FFmpegError as error:
        raise StvsrError(
            f"cannot read {path} as a video ({error.strerror}): it is not a video file, "
            "or it is damaged or incomplete (e.g. an .mp4 whose download stopped early); pass a complete video file"
        ) from error


# Text-art "video" (ANSI, BIN, XBIN, iCE): ffmpeg's demuxers for these claim
# files by extension, so any .txt/.nfo/.ans, or random bytes named .bin,
# opens as one.
_TEXT_ART_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    """The first real video stream: cover art in music files is a 'video'
    stream with the attached-picture disposition, and does not count; nor
    does text art, which is how ffmpeg reads a text file or a .bin file."""
    text_art = None
    for stream in container.streams.video:
        if stream.disposition & av.stream.Disposition.attached_pic:
            continue
        codec = _codec_name(stream)
        if codec not in _TEXT_ART_CODECS:
            return stream
        text_art = codec
    if text_art is not None:
        raise StvsrError(f"{path} is not a video file (ffmpeg reads it only as {text_art} text art); pass a video file")
    found = sorted({"cover art" if s.type == "video" else s.type for s in container.streams}) or ["no streams"]
    raise StvsrError(f"{path} has no video stream (only {', '.join(found)}); pass a video file")


def _first_frame(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> av.VideoFrame | None:
    """None when no frame decodes; `decode` reports that properly."""
    try:
        return next(container.decode(stream), None)
    except av.FFmpegError:
        return None


def _frames(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: Path
) -> Iterator[av.VideoFrame]:
    """Decoded frames, packet by packet; a decoding failure becomes a StvsrError."""
    index = 0
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                yield frame
                index += 1
    except av.FFmpegError as error:
        raise StvsrError(
            f"{path} is damaged: decoding failed at frame {index} ({error.strerror}); "
            f'repair it by re-encoding, e.g. ffmpeg -i "{path}" -c:v libx264 -crf 12 -c:a copy repaired.mkv'
        ) from error


def _codec_name(stream: av.stream.Stream) -> str:
    """The codec's name ('mp3', 'subrip'), not its decoder's ('mp3float',
    'srt'): the encoder matches these against what a muxer can hold."""
    return stream.codec_context.codec.canonical_name


def _frame_rate(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: Path
) -> Fraction:
    """The average rate, except for a raw elementary stream (.h264, .hevc,
    .m4v, .m2v: a demuxer without timestamps), whose average rate is only
    ffmpeg's default of 25 fps; its guessed rate is the bitstream's own
    timing (or that same 25 when the bitstream has none)."""
    if container.format.flags & av.format.Flags.no_timestamps.value:
        rate = stream.guessed_rate or stream.average_rate
    else:
        rate = stream.average_rate or stream.guessed_rate
    if not rate:
        raise StvsrError(
            f'{path} does not say its frame rate; re-mux it with one, e.g. ffmpeg -r 24 -i "{path}" -c copy fixed.mkv'
        )
    return Fraction(rate)


def _declared_seconds(stream: av.video.stream.VideoStream) -> float | None:
    """The video stream's own duration as the file states it. Matroska keeps
    it only as a DURATION tag, which is the time the track ends, so a video
    that starts after the audio has its start taken off. The container's
    duration is no substitute for checking truncation, since it also covers
    a longer audio stream."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    tag = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", stream.metadata.get("DURATION", ""))
    if tag:
        hours, minutes, seconds = tag.groups()
        end = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        return end - float((stream.start_time or 0) * stream.time_base)
    return None


def _declared_frames(stream: av.video.stream.VideoStream, fps: Fraction) -> int | None:
    seconds = _declared_seconds(stream)
    if seconds:
        return round(seconds * fps)
    return stream.frames or None


def _start_time(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, first: av.VideoFrame | None
) -> float:
    if first is not None and first.pts is not None:
        video_start = float(first.pts * stream.time_base)
    elif stream.start_time is not None:
        video_start = float(stream.start_time * stream.time_base)
    else:
        return 0.0
    container_start = container.start_time / av.time_base if container.start_time is not None else video_start
    return max(0.0, video_start - container_start)


def _has_alpha(format: av.VideoFormat, stream: av.video.stream.VideoStream) -> bool:
    """An alpha plane in the pixel format, or VP8/VP9 alpha in Matroska,
    which travels beside the picture (the alpha_mode tag) where ffmpeg's
    own decoder does not see it."""
    tagged = any(stream.metadata.get(key) == "1" for key in ("alpha_mode", "ALPHA_MODE"))
    return tagged or any(component.is_alpha for component in format.components)


# AVFieldOrder values of interlaced video, as ffprobe words them.
_FIELD_ORDERS = {2: "top field first", 3: "bottom field first", 4: "top field first", 5: "bottom field first"}


def _interlaced(stream: av.video.stream.VideoStream, first: av.VideoFrame | None) -> str | None:
    order = _FIELD_ORDERS.get(stream.codec_context.field_order)
    if order is None and first is not None and first.interlaced_frame:
        order = "interlaced"  # coded as fields, field order not stated
    return order


def _timecode(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> str | None:
    """The start timecode: a tag of the video stream (Matroska, MOV), of a
    QuickTime timecode track (a data stream) or of the file (MXF, AVI)."""
    sources = [stream.metadata, *(s.metadata for s in container.streams.data), container.metadata]
    for metadata in sources:
        for key in ("timecode", "TIMECODE"):
            if metadata.get(key):
                return metadata[key]
    return None


def _rotation(first: av.VideoFrame | None) -> int:
    """PyAV gives counterclockwise degrees in [-180, 180], a half turn as -180."""
    if first is None:
        return 0
    degrees = round(first.rotation)
    return 180 if degrees == -180 else degrees


# Colour: names, the matrix in use, and the conversion to RGB.

# AVColorSpace, AVColorPrimaries and AVColorTransferCharacteristic values
# with the names ffmpeg's -colorspace, -color_primaries and -color_trc take.
_MATRIX_NAMES = {
    0: "gbr", 1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "ycgco",
    9: "bt2020nc", 10: "bt2020c", 11: "smpte2085", 12: "chroma-derived-nc", 13: "chroma-derived-c",
    14: "ictcp", 15: "ipt-c2", 16: "ycgco-re", 17: "ycgco-ro",
}
_PRIMARIES_NAMES = {
    1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "film", 9: "bt2020",
    10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213",
}
_TRANSFER_NAMES = {
    1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "linear", 9: "log100",
    10: "log316", 11: "iec61966-2-4", 12: "bt1361e", 13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12",
    16: "smpte2084", 17: "smpte428", 18: "arib-std-b67",
}
_RANGE_TV, _RANGE_PC = 1, 2  # AVColorRange

# (Kr, Kb) of each matrix this module applies: R'G'B' -> Y'CbCr is
# Y = Kr R + (1 - Kr - Kb) G + Kb B, Cb = (B - Y) / (2 (1 - Kb)), Cr = (R - Y) / (2 (1 - Kr)).
_LUMA_WEIGHTS = {
    "bt709": (0.2126, 0.0722),
    "fcc": (0.30, 0.11),
    "bt470bg": (0.299, 0.114),
    "smpte170m": (0.299, 0.114),
    "smpte240m": (0.212, 0.087),
    "bt2020nc": (0.2627, 0.0593),
}


def _color_info(
    source: av.VideoFrame | av.video.codeccontext.VideoCodecContext, pix_fmt: str, height: int, path: Path
) -> ColorInfo:
    """`source` is the first frame or, when none decodes, the codec context:
    both carry colorspace/color_range/color_primaries/color_trc."""
    primaries = _PRIMARIES_NAMES.get(source.color_primaries)
    transfer = _TRANSFER_NAMES.get(source.color_trc)
    if _family(pix_fmt) == "rgb":
        return ColorInfo("gbr", "pc", primaries, transfer, matrix_tagged=source.colorspace == 0)
    if pix_fmt.startswith("yuvj") or source.color_range == _RANGE_PC:
        color_range = "pc"
    elif source.color_range == _RANGE_TV or _family(pix_fmt) == "yuv":
        color_range = "tv"
    else:
        color_range = "pc"  # untagged gray: swscale and image formats read it as full range
    tagged = _MATRIX_NAMES.get(source.colorspace)
    guess = "bt709" if height >= 720 else "smpte170m"
    if tagged in _LUMA_WEIGHTS:
        return ColorInfo(tagged, color_range, primaries, transfer, matrix_tagged=True)
    if tagged is not None and _family(pix_fmt) == "yuv":
        log.warning(
            "%s is tagged with the %s colour matrix, which stvsr cannot apply; reading it as %s", path, tagged, guess
        )
    return ColorInfo(guess, color_range, primaries, transfer, matrix_tagged=False)


def _family(pix_fmt: str) -> str:
    """'yuv' (incl. yuvj, nv12, p010), 'gray' (luma only), or 'rgb' (RGB,
    palette, bayer, XYZ, 1-bit: whatever swscale alone turns into RGB)."""
    fmt = av.VideoFormat(pix_fmt)
    if fmt.is_rgb or fmt.has_palette or fmt.is_bit_stream or pix_fmt.startswith("xyz"):
        return "rgb"
    return "yuv" if len(fmt.components) >= 3 else "gray"


# Chroma upsampling only (no matrix, no range change), so any filter works;
# accurate rounding and bit-exact output make results the same on every CPU.
_UPSAMPLE = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.BITEXACT


def frame_to_rgb(frame: av.VideoFrame, info: VideoInfo, reformatter: VideoReformatter) -> np.ndarray:
    """One decoded frame of the video `info` describes as (H, W, 3) RGB:
    uint8, or uint16 over 0..65535 when `info.bit_depth` > 8. swscale brings a YUV or gray frame to
    planar 4:4:4 (or gray) at the source's depth with its range untouched;
    the matrix and range are then applied here in float32."""
    deep = info.bit_depth > 8
    family = _family(info.pix_fmt)
    if family == "rgb":
        return reformatter.reformat(frame, format="rgb48le" if deep else "rgb24").to_ndarray()
    bits = max(info.bit_depth, 8)
    planar = ("yuv444p" if family == "yuv" else "gray") + (f"{bits}le" if deep else "")
    color_range = _RANGE_PC if info.color.range == "pc" else _RANGE_TV
    frame = reformatter.reformat(
        frame, format=planar, src_color_range=color_range, dst_color_range=color_range, interpolation=_UPSAMPLE
    )
    planes = [_plane(plane, deep) for plane in frame.planes]
    if info.color.range == "pc":
        y = planes[0] / np.float32(2**bits - 1)
        chroma = [(p - np.float32(2 ** (bits - 1))) / np.float32(2**bits - 1) for p in planes[1:]]
    else:
        step = np.float32(2 ** (bits - 8))
        y = (planes[0] - 16 * step) / (219 * step)
        chroma = [(p - 128 * step) / (224 * step) for p in planes[1:]]
    if family == "gray":
        rgb = np.stack([y, y, y], axis=-1)
    else:
        kr, kb = _LUMA_WEIGHTS[info.color.matrix]
        cb, cr = chroma
        r = y + (2 - 2 * kr) * cr
        b = y + (2 - 2 * kb) * cb
        g = (y - kr * r - kb * b) / (1 - kr - kb)
        rgb = np.stack([r, g, b], axis=-1)  # (H, W, 3) float32, nominally 0..1
    peak = 65535 if deep else 255
    return (np.clip(rgb, 0, 1) * peak + 0.5).astype(np.uint16 if deep else np.uint8)


def _plane(plane: av.video.plane.VideoPlane, deep: bool) -> np.ndarray:
    """One plane as float32 (H, W), without the row padding."""
    dtype = np.dtype("<u2") if deep else np.dtype(np.uint8)
    rows = np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // dtype.itemsize)
    return rows[:, : plane.width].astype(np.float32)
