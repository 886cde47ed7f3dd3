"""Encode: upscaled RGB frames in, a finished video file (or a folder of PNGs) out.

One ffmpeg process does the whole job in one pass: raw frames arrive on its
stdin, the source file is its second input, and every audio and subtitle
stream of the source is carried over from there (copied when the output
container can hold it, re-encoded when not). Colour is converted to YUV with
the source's matrix and range and tagged like the source; rotation and the
timecode are tagged, never applied to the pixels.

The output's extension picks the container and, unless told otherwise, the
encoder and pixel format: H.264 (libx264) for the containers that hold it
(.mp4, .mkv, .mov, .ts, ...), VP9 for .webm, a palette per frame for .gif
(`resolve_options`). Before any frame is decoded, `try_encoder` encodes one
black frame with the run's exact settings, so an encoder that cannot run
here (a hardware encoder without its GPU) fails in a second.

ffmpeg writes into a hidden staging folder next to the output; only a
successful `close()` moves the result onto the output path, so a failure or an
interrupt never leaves a half-written video where the user expects a finished
one. A run that is killed outright (kill -9) cannot clean up: the staging
folder is locked while its run lives, so the next run into the same output
can tell a dead run's folder from a live one's (`remove_leftovers`).

Capabilities come from two places: the encoders (names, pixel formats,
options) from the ffmpeg binary that will run, and what a container can hold
from PyAV's libavformat (`avformat_query_codec`), which the binary does not
expose, corrected where that answer is wrong (`_muxer_holds`). The two are
separate builds of FFmpeg; `tests/test_encode.py` checks every container the
README names against the binary.
"""
from __future__ import annotations

import functools
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import IO

import av
import imageio_ffmpeg
import numpy as np

from .decode import VideoInfo
from .errors import StvsrError
from .files import held_elsewhere

try:
    import fcntl  # staging folder locks; POSIX only
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger("stvsr")

DEFAULT_CRF = 18

# Containers that take the streams with `-movflags +faststart` (index up front).
_MOOV_MUXERS = {"mp4", "mov", "ipod"}

# Codecs a muxer claims through avformat_query_codec but should not get:
# mov refuses Opus, FLAC, VP8, VP9 and AV1 at write_header ("vp9 only
# supported in MP4"), and PCM in MP4 (ISO 23003-5 'ipcm', new in FFmpeg 6.1)
# muxes but few players read it. Prefixes of codec names.
_AVOID = {"mov": ("opus", "flac", "vp8", "vp9", "av1"), "mp4": ("pcm_",)}

# What the muxers that declare no codec list hold: avformat_query_codec
# answers only their default codecs (MPEG-2 and MP2 for MPEG-TS), so
# H.264 and AAC looked impossible in .ts. These are the codecs each one has
# a stream mapping for in FFmpeg (mpegtsenc.c, oggenc.c); MPEG-TS writes any
# other codec too, as private data that players do not read.
_HOLDS = {
    "mpegts": frozenset({
        "mpeg1video", "mpeg2video", "mpeg4", "h264", "hevc", "cavs", "dirac", "vc1",
        "mp2", "mp3", "aac", "aac_latm", "ac3", "eac3", "dts", "truehd", "opus", "s302m",
        "dvb_subtitle", "dvb_teletext",
    }),
    "ogg": frozenset({"theora", "vp8", "vorbis", "opus", "flac", "speex"}),
}

# The video encoder of an output whose --codec is not given: the first of
# these its container holds (H.264 where it can, VP9 in WebM, GIF's own),
# else the encoder of the container's own default codec.
_DEFAULT_ENCODERS = ("libx264", "libvpx-vp9", "gif")

# Pixel formats for an output whose --pix-fmt is not given, in order of
# preference, the first the encoder takes (10-bit ones only for sources of
# more than 8 bits); an encoder that takes none of them gets its own first.
_PIX_FMTS = ("yuv420p", "pal8")
_DEEP_PIX_FMTS = ("yuv420p10le",)

# Encoders that run on dedicated hardware and its driver: when one cannot
# start, the hint is a software encoder.
_HARDWARE = re.compile(r"_(nvenc|qsv|vaapi|amf|v4l2m2m|vulkan|videotoolbox|mf|omx|mediacodec)$")

# Containers that keep a start timecode given as the video stream's tag (a
# tmcd track in MOV and MP4, a TIMECODE tag in Matroska and WebM).
_TIMECODE_MUXERS = {"mov", "mp4", "matroska", "webm"}

# GIF delays are whole hundredths of a second, and browsers show a delay
# under 2 as 10: above 50 fps a GIF stutters.
_GIF_MAX_FPS = 50

# Re-encode targets in order of preference: (codec, ffmpeg encoder). The
# first one the output container holds, and the ffmpeg binary has, is used.
_AUDIO_TARGETS = (("aac", "aac"), ("opus", "libopus"))
_TEXT_SUBTITLE_TARGETS = (("mov_text", "mov_text"), ("ass", "ass"), ("webvtt", "webvtt"), ("subrip", "subrip"))

# Matrices the scale filter can convert to (its `out_color_matrix` values).
_SCALE_MATRICES = {"bt709", "fcc", "bt470bg", "smpte170m", "smpte240m", "bt2020nc"}

# libx264/libx265 declare crf up to FLT_MAX but clamp at 51; the other
# encoders state their real range in `ffmpeg -h encoder=NAME`.
_CRF_MAX = {"libx264": 51.0, "libx264rgb": 51.0, "libx265": 51.0}

# Encoders whose crf means constrained quality unless the bitrate is 0.
_CRF_NEEDS_ZERO_BITRATE = {"libvpx", "libvpx-vp9", "libaom-av1"}

# What --crf becomes for encoders that call their constant-quality setting
# something else, tried in this order among each encoder's own options:
# NVENC's `cq` (0 to 51, with the bitrate cap lifted, as crf for libvpx).
# Intel QSV's is the generic `global_quality`, which no encoder lists as its
# own, hence the name pattern.
_QUALITY_OPTIONS = ("crf", "cq")
_QSV = re.compile(r"_qsv$")

_NUMBERED_PNG = re.compile(r"^\d{5,}\.png$")


@dataclass(frozen=True)
class EncodeOptions:
    """How the video stream is encoded; audio and subtitles follow the source.

    `codec` and `pix_fmt` left as None are chosen for the output's container
    and the source (`resolve_options`): libx264 and yuv420p (10-bit for a
    deeper source) where the container holds H.264, VP9 for WebM, a palette
    per frame for GIF. `crf` is 18 by default; an encoder without a crf
    option (mpeg4, gif) then uses its own rate control, while any other crf
    value for such an encoder is an error (`check_encoder`). An explicit
    `--crf 18` cannot be told apart from the default and is treated like it.
    `audio=False` drops the audio and subtitles; a container that can hold
    no audio (GIF) drops them too, with a warning. `crf` reaches an encoder
    under its own name for constant quality (NVENC: `-cq`). `extra` options
    go to the video encoder after stvsr's own, so they win; each must be an
    option of that encoder or of every encoder (`-g`, `-bf`), which
    `check_encoder` checks, and `try_encoder` tries its value.
    """

    codec: str | None = None
    crf: int | None = DEFAULT_CRF
    preset: str | None = None
    pix_fmt: str | None = None
    audio: bool = True
    extra: tuple[tuple[str, str], ...] = ()  # --encoder-opt KEY=VALUE, passed on as -KEY VALUE

    def __post_init__(self) -> None:  # the range of crf depends on the encoder: `check_encoder`
        if self.crf is not None and self.crf < 0:
            raise StvsrError(f"--crf must not be negative (got {self.crf})")


# ---------------------------------------------------------------- checks


def is_frame_directory(output: Path | str) -> bool:
    """PNG frames go to an existing directory, or to a path written with a
    trailing separator ('frames/'). `Path` drops that separator, so callers
    that want it honoured pass the path as the user typed it."""
    text = os.fspath(output)
    return os.path.isdir(text) or text.endswith(("/", os.sep))


def check_output(source: Path, output: Path | str, *, overwrite: bool) -> None:
    """Refuse an output path that cannot work, before any frame is computed."""
    frames = is_frame_directory(output)
    output = Path(output)
    if frames:
        if output.exists() and not output.is_dir():
            raise StvsrError(f"{output} is a file, not a directory; name a directory for PNG frames")
        if output.is_dir():
            if not overwrite and any(_numbered_pngs(output)):
                raise StvsrError(f"{output} already holds numbered PNG frames; pass --overwrite to replace them")
            _check_writable(output)
            return
        _check_writable(output.parent)
        return
    if output.exists():
        if os.path.exists(source) and os.path.samefile(source, output):
            raise StvsrError(f"{output} is the input file itself; choose another output path")
        if not overwrite:
            raise StvsrError(f"{output} already exists; pass --overwrite to replace it")
    _check_writable(output.parent)
    _muxer_for(output)


def check_encoder(options: EncodeOptions, output: Path | str) -> None:
    """Refuse encoder settings ffmpeg would reject, before any frame is
    computed: an unknown or non-video encoder, one the container cannot hold,
    a pixel format, preset or crf it does not take. (What only shows when
    the encoder opens, a preset name libx264 does not know or a hardware
    encoder without its GPU, `try_encoder` finds.) Nothing to check for PNG
    frames."""
    if is_frame_directory(output):
        return
    output = Path(output)
    muxer = _muxer_for(output)
    encoders = _encoders()
    name = options.codec or default_encoder(muxer)
    if name not in encoders:
        others = sorted(enc for enc, (_, codec) in encoders.items() if codec == name)
        hint = f"its encoders here: {', '.join(others)}" if others else "`stvsr encoders` lists the ones there are"
        raise StvsrError(f"ffmpeg has no encoder named {name!r}; {hint}")
    kind, codec = encoders[name]
    if kind != "video":
        raise StvsrError(f"{name} encodes {kind}, not video; use a video encoder such as libx264")
    if not _muxer_holds(muxer, codec):
        suggestion = default_encoder(muxer)
        raise StvsrError(
            f"{output.name}: the {muxer} container cannot hold {codec} video ({name}); "
            f"leave out --codec to get {suggestion}, or use another extension such as .mkv"
        )
    help_ = _encoder_help(name)
    if options.pix_fmt and help_.pix_fmts and options.pix_fmt not in help_.pix_fmts:
        raise StvsrError(f"{name} cannot take pixel format {options.pix_fmt}; use one of: {' '.join(help_.pix_fmts)}")
    if options.preset is not None and "preset" not in help_.options:
        raise StvsrError(f"{name} has no presets; leave out --preset")
    if options.crf is not None:
        if help_.quality is None:
            if options.crf != DEFAULT_CRF:
                raise StvsrError(f"{name} has no crf setting; leave out --crf or use libx264, libx265 or libvpx-vp9")
        elif not help_.crf_min <= options.crf <= help_.crf_max:
            raise StvsrError(f"--crf {options.crf} is out of range for {name} (its -{help_.quality}); "
                             f"use {help_.crf_min:g} to {help_.crf_max:g}")
    generic = _generic_video_options()
    for key, _ in options.extra:
        if key not in help_.options and key not in generic:
            raise StvsrError(f"--encoder-opt {key}=...: {name} has no option {key!r}; "
                             f"`stvsr encoders {name}` lists its options")


def remove_leftovers(output: Path | str) -> None:
    """Deal with the staging folders that earlier runs into `output` left
    behind when they were killed outright (kill -9, the OOM killer, a power
    cut), which no clean-up code survives. A folder whose lock nobody holds
    belongs to no running process and is removed; one whose lock is held
    belongs to a run still writing `output`, and is left alone. Either way,
    with a warning."""
    output = Path(output)
    home = output if output.is_dir() else output.parent
    prefix = _staging_prefix(output)
    try:
        leftovers = sorted(p for p in home.iterdir() if p.name.startswith(prefix) and p.is_dir())
    except OSError:
        return
    for folder in leftovers:
        try:
            held = held_elsewhere(folder / _LOCK)
        except OSError:
            continue
        if held is None:
            log.warning("%s is probably the unfinished output of an earlier stvsr run into %s that was killed; "
                        "delete it if no other run is writing %s", folder, output.name, output.name)
            continue
        if held:
            log.warning("another stvsr run is writing %s right now (into %s); whichever run ends last replaces "
                        "the other's output", output.name, folder)
            continue
        shutil.rmtree(folder, ignore_errors=True)
        log.warning("removed %s, the unfinished output of an earlier run into %s that was killed", folder, output.name)


def _check_writable(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise StvsrError(f"{folder} is a file, not a folder; choose another output path")
    if not folder.is_dir():
        raise StvsrError(f"folder {folder} does not exist; create it first or choose another output path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StvsrError(f"cannot write into {folder} (permission denied); choose another output path")


def _numbered_pngs(folder: Path) -> list[Path]:
    return [path for path in folder.iterdir() if _NUMBERED_PNG.match(path.name)]


def _muxer_for(output: Path) -> str:
    """The muxer ffmpeg picks for this file name, as PyAV guesses it (opening
    for writing by name allocates the context without creating the file)."""
    try:
        with av.open(str(output), "w") as container:
            muxer = container.format.name
    except ValueError:
        if not output.suffix:
            raise StvsrError(
                f"{output.name} has no extension to choose a container by; add one such as .mp4, "
                f"or write {output.name}/ for a directory of PNG frames"
            ) from None
        raise StvsrError(
            f"{output.name}: ffmpeg knows no container for {output.suffix}; use .mp4, .mkv, .mov or .webm"
        ) from None
    if muxer.startswith("image2"):
        raise StvsrError(f"{output.name} names a single image; for PNG frames give a directory such as {output.stem}/")
    return muxer


# ------------------------------------------------------ ffmpeg capabilities


def ffmpeg_exe() -> str:
    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.cache
def _encoders() -> dict[str, tuple[str, str]]:
    """Encoder name -> (kind, codec), from `ffmpeg -encoders`, whose lines
    read ' V....D libx264   description (codec h264)'."""
    text = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    kinds = {"V": "video", "A": "audio", "S": "subtitle"}
    encoders = {}
    for line in text.split("------", 1)[-1].splitlines():
        fields = line.split(None, 2)
        if len(fields) == 3 and fields[0][0] in kinds:
            codec = re.search(r"\(codec (\S+)\)\s*$", fields[2])
            encoders[fields[1]] = (kinds[fields[0][0]], codec.group(1) if codec else fields[1])
    return encoders


@dataclass(frozen=True)
class _EncoderHelp:
    pix_fmts: tuple[str, ...]
    options: frozenset[str]
    quality: str | None  # the option --crf becomes (`_QUALITY_OPTIONS`), None when there is none
    crf_min: float
    crf_max: float


def encoder_help_text(name: str) -> str:
    """What `ffmpeg -h encoder=NAME` says of one encoder (its pixel formats and
    options), from the ffmpeg stvsr runs; `stvsr encoders NAME` prints it."""
    text = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-h", f"encoder={name}"], capture_output=True, text=True
    ).stdout
    if not text.strip() or "is not recognized" in text:
        raise StvsrError(f"ffmpeg has no encoder named {name!r}; `stvsr encoders` lists the ones there are")
    return text.rstrip()


@functools.cache
def _encoder_help(name: str) -> _EncoderHelp:
    """Pixel formats and options of one encoder, from `ffmpeg -h encoder=NAME`."""
    text = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-h", f"encoder={name}"], capture_output=True, text=True
    ).stdout
    pix_fmts = re.search(r"Supported pixel formats:(.*)", text)
    options = dict(re.findall(r"^  -(\S+)\s+<\w+>\s+(.*)$", text, flags=re.MULTILINE))
    quality = next((option for option in _QUALITY_OPTIONS if option in options), None)
    if quality is None and _QSV.search(name):
        quality = "global_quality"
    crf_min, crf_max = 0.0, _CRF_MAX.get(name, float("inf"))
    bounds = re.search(r"\(from (-?\d+(?:\.\d+)?) to (\d+(?:\.\d+)?)\)", options.get(quality or "", ""))
    if name not in _CRF_MAX and bounds:
        crf_max = float(bounds.group(2))
    if quality == "global_quality":
        crf_min, crf_max = 1.0, 51.0  # QSV's ICQ range; the generic option states no bounds
    return _EncoderHelp(tuple(pix_fmts.group(1).split()) if pix_fmts else (), frozenset(options), quality,
                        crf_min, crf_max)


@functools.cache
def _generic_video_options() -> frozenset[str]:
    """Options every video encoder takes (AVCodecContext's: -g, -bf, -maxrate
    ...), from `ffmpeg -h full`; `-KEY VALUE` reaches any encoder with them."""
    text = subprocess.run([ffmpeg_exe(), "-hide_banner", "-h", "full"], capture_output=True, text=True).stdout
    section = text.split("AVCodecContext AVOptions:", 1)[-1].split("\n\n", 1)[0]
    return frozenset(re.findall(r"^  -(\S+)\s+<\w+>\s+E..V", section, flags=re.MULTILINE))


@functools.cache
def _muxer_codecs(muxer: str) -> frozenset[str]:
    """Codec names (not encoder or decoder names) the muxer can hold."""
    with av.open(os.devnull, "w", format=muxer) as container:
        implementations = container.supported_codecs
    return frozenset(_canonical(name) for name in implementations)


def _canonical(name: str) -> str:
    """'mp3float', 'pgssub', 'libopus' -> 'mp3', 'hdmv_pgs_subtitle', 'opus'."""
    try:
        return av.codec.Codec(name, "r").canonical_name
    except av.codec.codec.UnknownCodecError:
        return av.codec.Codec(name, "w").canonical_name


def _muxer_holds(muxer: str, codec: str) -> bool:
    held = _HOLDS[muxer] if muxer in _HOLDS else _muxer_codecs(muxer)
    return codec in held and not codec.startswith(_AVOID.get(muxer, ()))


def default_encoder(muxer: str) -> str:
    """The video encoder an output in `muxer` gets when --codec is not given."""
    encoders = _encoders()
    for name in _DEFAULT_ENCODERS:
        if name in encoders and _muxer_holds(muxer, encoders[name][1]):
            return name
    with av.open(os.devnull, "w", format=muxer) as container:
        return av.codec.Codec(container.default_video_codec, "w").name


def default_pix_fmt(encoder: str, bit_depth: int) -> str:
    """The pixel format an encoder gets when --pix-fmt is not given: 10-bit
    4:2:0 for a source of more than 8 bits (yuv420p10le, or the encoder's
    own layout of it: NVENC and QSV take p010le), else 8-bit 4:2:0, else a
    palette (GIF), else the encoder's own first choice."""
    taken = _encoder_help(encoder).pix_fmts
    preferred = (*(_DEEP_PIX_FMTS if bit_depth > 8 else ()), *_PIX_FMTS)
    if not taken:
        return preferred[0]
    if bit_depth > 8 and not any(pix_fmt in taken for pix_fmt in _DEEP_PIX_FMTS):
        deep = [pix_fmt for pix_fmt in taken if _is_deep_420(pix_fmt)]
        if deep:
            return min(deep, key=lambda pix_fmt: _bits(pix_fmt))  # 10 bits before 12 or 16
    return next((pix_fmt for pix_fmt in preferred if pix_fmt in taken), taken[0])


def _bits(pix_fmt: str) -> int:
    return max(component.bits for component in av.VideoFormat(pix_fmt).components)


def _is_deep_420(pix_fmt: str) -> bool:
    """A YUV 4:2:0 format of more than 8 bits, in system memory (not 'cuda')."""
    try:
        fmt = av.VideoFormat(pix_fmt, 64, 64)
    except ValueError:
        return False
    components = fmt.components
    return (len(components) == 3 and not fmt.is_rgb and _bits(pix_fmt) > 8
            and components[1].width == 32 and components[1].height == 32)


def list_encoders() -> list[tuple[str, str, str]]:
    """(encoder, codec, description) of every video encoder of the ffmpeg
    that stvsr runs (`ffmpeg_exe`), for `stvsr encoders`."""
    text = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    rows = []
    for line in text.split("------", 1)[-1].splitlines():
        fields = line.split(None, 2)
        if len(fields) == 3 and fields[0].startswith("V"):
            match = re.fullmatch(r"(.*?)\s*(?:\(codec (\S+)\))?\s*", fields[2])
            rows.append((fields[1], match.group(2) or fields[1], match.group(1)))
    return rows


# ---------------------------------------------------------- the command


def resolve_options(options: EncodeOptions, output: Path | str, bit_depth: int) -> EncodeOptions:
    """Fill in what the user left to us, for this output and encoder: the
    encoder (`default_encoder`), the pixel format (`default_pix_fmt`; a
    warning when a source of more than 8 bits gets 8) and the default crf
    (dropped for an encoder without one)."""
    muxer = _muxer_for(Path(output))
    if options.codec is None:
        options = replace(options, codec=default_encoder(muxer))
    help_ = _encoder_help(options.codec)
    if options.pix_fmt is None:
        pix_fmt = default_pix_fmt(options.codec, bit_depth)
        if bit_depth > 8 and max(c.bits for c in av.VideoFormat(pix_fmt).components) <= 8:
            log.warning("%s cannot encode more than 8 bits; writing 8-bit %s", options.codec, pix_fmt)
        options = replace(options, pix_fmt=pix_fmt)
    if options.crf is not None and help_.quality is None:
        log.info("%s has no crf setting; using its default rate control", options.codec)
        options = replace(options, crf=None)
    return options


def video_command(
    target: Path, source: VideoInfo, *, width: int, height: int, fps: Fraction, options: EncodeOptions
) -> list[str]:
    """The ffmpeg command line that turns raw frames on stdin into `target`,
    carrying over the source's audio, subtitles and timecode. Pure apart
    from asking PyAV what the output container holds; `options` as given
    (see `resolve_options`), a missing codec or pix_fmt meaning the default."""
    muxer = _muxer_for(target)
    command = [*_pipe_input(source, width, height, fps), "-i", str(source.path), "-map", "0:v"]
    if options.audio:
        command += _source_streams(source, muxer)
    # Global metadata (title...) comes from the first input by default,
    # which is the pipe. (A per-stream -map_metadata would switch off the
    # default copying of every other stream's tags, language included.)
    command += ["-map_metadata", "1"]
    if source.timecode and muxer in _TIMECODE_MUXERS:
        command += ["-metadata:s:v:0", f"timecode={double_rate_timecode(source.timecode, source.fps)}"]
    return [*command, *_video_options(source, muxer, options), str(target)]


def _video_options(source: VideoInfo, muxer: str, options: EncodeOptions) -> list[str]:
    """The output options of the video stream: filters, encoder and its settings."""
    codec = options.codec or default_encoder(muxer)
    pix_fmt = options.pix_fmt or default_pix_fmt(codec, source.bit_depth)
    command = ["-fps_mode", "passthrough"]  # every frame written is a frame in the video, no more
    command += ["-vf", _colour_filter(source, pix_fmt), "-c:v", codec, "-pix_fmt", pix_fmt]
    if options.crf is not None:
        quality = _encoder_help(codec).quality or "crf"
        command += [f"-{quality}", str(options.crf)]
        if codec in _CRF_NEEDS_ZERO_BITRATE or quality == "cq":
            command += ["-b:v", "0"]
    if options.preset is not None:
        command += ["-preset", options.preset]
    for key, value in options.extra:
        command += [f"-{key}", value]
    if muxer in _MOOV_MUXERS:
        command += ["-movflags", "+faststart"]
    return command


def segment_command(target: Path, source: VideoInfo, *, width: int, height: int, fps: Fraction,
                    options: EncodeOptions) -> list[str]:
    """The ffmpeg command line that encodes raw frames on stdin into one
    segment of a run: the video stream alone, starting at time 0, with the
    colour tags and display rotation. `join_command` later puts the
    segments end to end and adds the source's other streams. `options` as
    for `video_command`."""
    command = [*_pipe_input(source, width, height, fps, offset=False), "-map", "0:v"]
    return [*command, *_video_options(source, _muxer_for(target), options), str(target)]


def join_command(segments: Path, target: Path, source: VideoInfo, *, fps: Fraction, audio: bool,
                 first_frame: int = 0, frames: int | None = None) -> list[str]:
    """The ffmpeg command line that joins encoded segments, listed in the
    concat demuxer's file `segments`, into `target` without re-encoding them
    (`-c copy`: the frames are exactly the segments' frames), and carries
    over the source's audio, subtitles, metadata and timecode, as
    `video_command` does in one pass.

    `first_frame` and `frames` say which part of the source the video shows,
    in source frames at the source's rate (`fps` is the output's, twice
    that): for a part, the other streams are cut to the same times (the
    source input's -ss and -t; copied audio starts at the first packet
    from there, within a packet's length, about 20 ms), and the timecode
    starts at the part's first frame.
    """
    muxer = _muxer_for(target)
    source_fps = fps / 2
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    cut = first_frame > 0 or frames is not None
    if source.start_time and not cut:
        command += ["-itsoffset", f"{source.start_time:.6f}"]  # as `_pipe_input` does in one pass
    command += ["-f", "concat", "-safe", "0", "-i", str(segments)]
    if cut:
        # -ss counts from the source's earliest stream, the video's first frame from its own start.
        command += ["-ss", f"{float(source.start_time + first_frame / source_fps):.6f}"]
        if frames is not None:
            command += ["-t", f"{float(frames / source_fps):.6f}"]
    command += ["-i", str(source.path), "-map", "0:v", "-c:v", "copy"]
    if audio:
        command += _source_streams(source, muxer)
    if cut:
        # Stream copy keeps the packets before the cut, at negative times, unless told not to.
        command += ["-copypriorss", "0"]
    command += ["-map_metadata", "1"]
    if source.timecode and muxer in _TIMECODE_MUXERS:
        timecode = double_rate_timecode(source.timecode, source.fps, skip=2 * first_frame)
        command += ["-metadata:s:v:0", f"timecode={timecode}"]
    if muxer in _MOOV_MUXERS:
        command += ["-movflags", "+faststart"]
    return [*command, str(target)]


def frames_command(pattern: Path, source: VideoInfo, *, width: int, height: int, fps: Fraction,
                   start_number: int = 0) -> list[str]:
    """The ffmpeg command line that writes raw frames on stdin as numbered
    PNGs; `pattern` is like 'dir/%05d.png', where only the file name may
    hold a '%' pattern: any '%' in the folders is escaped as '%%'. 16-bit
    frames give 16-bit PNGs. The first frame gets `start_number`."""
    pix_fmt = "rgb48be" if source.bit_depth > 8 else "rgb24"
    escaped = os.path.join(os.fspath(pattern.parent).replace("%", "%%"), pattern.name)
    return [
        *_pipe_input(source, width, height, fps, video=False),
        "-map", "0:v", "-c:v", "png", "-pix_fmt", pix_fmt, "-f", "image2", "-start_number", str(start_number), escaped,
    ]


def double_rate_timecode(timecode: str, fps: Fraction, skip: int = 0) -> str:
    """The timecode `timecode` (at `fps`) names, written at twice the rate:
    the same instant, twice the frame number, plus `skip` frames at the new
    rate (an output that starts later in the source). Drop-frame timecodes
    ('01:00:00;12', at 29.97 or 59.94 fps) stay drop-frame."""
    match = re.fullmatch(r"(\d+):(\d+):(\d+)([:;.])(\d+)", timecode.strip())
    if match is None:
        return timecode
    hours, minutes, seconds, separator, frames = match.groups()
    drop = separator in ";."
    rate = round(fps)
    number = _timecode_frames(int(hours), int(minutes), int(seconds), int(frames), rate, drop)
    return _timecode_text(2 * number + skip, 2 * rate, drop, separator)


def _drop_per_minute(rate: int) -> int:
    """Frame numbers skipped each minute but every tenth in drop-frame
    timecode: 2 at 30 (29.97) fps, 4 at 60 (59.94)."""
    return round(rate / 15)


def _timecode_frames(hours: int, minutes: int, seconds: int, frames: int, rate: int, drop: bool) -> int:
    number = (hours * 3600 + minutes * 60 + seconds) * rate + frames
    if drop:
        total_minutes = hours * 60 + minutes
        number -= _drop_per_minute(rate) * (total_minutes - total_minutes // 10)
    return number


def _timecode_text(number: int, rate: int, drop: bool, separator: str) -> str:
    if drop:
        skip = _drop_per_minute(rate)
        per_ten_minutes, per_minute = rate * 600 - skip * 9, rate * 60 - skip
        tens, rest = divmod(number, per_ten_minutes)
        number += skip * 9 * tens + (skip * ((rest - skip) // per_minute) if rest > skip else 0)
    frames = number % rate
    seconds = number // rate
    digits = len(str(rate - 1))
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}{separator}{frames:0{max(2, digits)}d}"


def _pipe_input(source: VideoInfo, width: int, height: int, fps: Fraction, video: bool = True,
                offset: bool = True) -> list[str]:
    """ffmpeg's global options and the raw-frame input on stdin.

    `-framerate` (the rawvideo demuxer's rate), not `-r`: an input `-r`
    makes ffmpeg restamp every frame from zero, which discards `-itsoffset`.
    For a video, `-itsoffset` puts the first frame where the source's first
    frame was relative to its audio, since ffmpeg shifts the source input so
    that its earliest stream starts at zero; PNG frames must not get it, as
    the image2 muxer would fill the gap with copies of the first frame.
    `-display_rotation` needs `-noautorotate`, or ffmpeg would turn the
    pixels instead of tagging them. `offset=False` leaves the offset out
    (a segment, whose join applies it).
    """
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    command += ["-f", "rawvideo", "-pixel_format", "rgb48le" if source.bit_depth > 8 else "rgb24"]
    command += ["-video_size", f"{width}x{height}", "-framerate", f"{fps.numerator}/{fps.denominator}"]
    if video and offset and source.start_time:
        command += ["-itsoffset", f"{source.start_time:.6f}"]
    if video and source.rotation:
        command += ["-display_rotation", str(source.rotation), "-noautorotate"]
    return [*command, "-i", "pipe:0"]


def _colour_filter(source: VideoInfo, pix_fmt: str) -> str:
    """RGB -> YUV with the source's matrix and range, then the tags.

    The tags are set on the frames (setparams) rather than with the
    `-color_primaries`/`-color_trc` output options: FFmpeg 9 takes the
    encoder's colour properties from the frames, and those options lose.
    """
    colour = source.color
    tags = [f"color_primaries={colour.primaries}"] if colour.primaries else []
    tags += [f"color_trc={colour.transfer}"] if colour.transfer else []
    if av.VideoFormat(pix_fmt).has_palette:
        # GIF: a palette made for each frame (streams: a palette for the
        # whole video would hold every frame until the last) and used at once.
        return "split[frames][copy];[copy]palettegen=stats_mode=single[palette];[frames][palette]paletteuse=new=1"
    if av.VideoFormat(pix_fmt).is_rgb:
        return "setparams=" + ":".join([*tags, "colorspace=gbr", "range=pc"])
    matrix, range_ = colour.matrix, colour.range
    if matrix == "gbr":  # an RGB source into YUV: what players assume for HD
        matrix, range_ = "bt709", "tv"
    elif matrix not in _SCALE_MATRICES:
        matrix = "bt2020nc" if matrix.startswith("bt2020") else "bt709"
        log.warning("ffmpeg cannot convert to the %s colour matrix; using %s", colour.matrix, matrix)
    scale = f"scale=out_color_matrix={_scale_matrix(matrix)}:out_range={range_}"
    return f"{scale},setparams=" + ":".join([*tags, f"colorspace={matrix}", f"range={range_}"])


def _scale_matrix(matrix: str) -> str:
    """The scale filter spells BT.2020 non-constant luminance 'bt2020'."""
    return "bt2020" if matrix == "bt2020nc" else matrix


def _source_streams(source: VideoInfo, muxer: str) -> list[str]:
    """-map and -c options for each audio and subtitle stream of the source
    (input 1): copied when the container holds the codec, else re-encoded to
    one it holds. What has nowhere to go (any audio in a GIF, a bitmap
    subtitle in MP4) is dropped, loudly."""
    args: list[str] = []
    audio_target = _target(_AUDIO_TARGETS, muxer)
    for index, name in enumerate(source.audio_codecs):
        codec = _canonical(name)
        encoder = "copy" if _muxer_holds(muxer, codec) else audio_target
        if encoder is None:
            log.warning("the %s container holds no audio: the audio of %s is left out; write .mp4 or .mkv to keep it",
                        muxer, source.path.name)
            break
        if encoder != "copy":
            log.info("audio stream %d (%s) is re-encoded with %s: %s cannot hold it", index, codec, encoder, muxer)
        args += ["-map", f"1:a:{index}", f"-c:a:{index}", encoder]
    text_target = _target(_TEXT_SUBTITLE_TARGETS, muxer)
    kept = 0
    for index, name in enumerate(source.subtitle_codecs):
        codec = _canonical(name)
        encoder = "copy" if _muxer_holds(muxer, codec) else None
        if encoder is None and _is_text_subtitle(codec):
            encoder = text_target
        if encoder is None:
            why = "it cannot be converted to text" if text_target else "it holds no subtitles"
            log.warning("subtitle stream %d (%s) is dropped: %s cannot hold it and %s; write .mkv to keep it",
                        index, codec, muxer, why)
            continue
        if encoder != "copy":
            log.info("subtitle stream %d (%s) is converted to %s", index, codec, encoder)
        args += ["-map", f"1:s:{index}", f"-c:s:{kept}", encoder]
        kept += 1
    return args


def _target(targets: tuple[tuple[str, str], ...], muxer: str) -> str | None:
    encoders = _encoders()
    return next((encoder for codec, encoder in targets if encoder in encoders and _muxer_holds(muxer, codec)), None)


def _is_text_subtitle(codec: str) -> bool:
    try:
        return bool(av.codec.Codec(codec, "r").text_sub)
    except av.codec.codec.UnknownCodecError:
        return False


# ------------------------------------------------------------ the writers

_LOCK = ".lock"  # in a staging folder: locked (flock) while its run lives


def _staging_prefix(output: Path) -> str:
    return f".{output.name}.stvsr-"


class FrameWriter:
    """An ffmpeg process fed raw RGB frames on stdin, writing into a hidden
    staging folder; `close()` publishes the result (`publish` moves it onto
    the output path), `abort()` discards it.

    Use it as a context manager: leaving the block normally closes, leaving
    it with an exception (KeyboardInterrupt included) aborts. ffmpeg's stderr
    goes to an anonymous temporary file, so it can never fill a pipe and
    stall ffmpeg while we wait on its stdin. `close` and `abort` may race
    (the encoder thread finds ffmpeg gone while the main thread is
    interrupted): the one that comes second waits until the first is done,
    so the staging folder is gone before either returns.
    """

    def __init__(
        self,
        command: list[str],
        output: Path,
        staging: Path,
        publish: Callable[[], None],
        *,
        width: int,
        height: int,
        dtype: type,
    ) -> None:
        self.output = output
        self.shape = (height, width, 3)
        self.dtype = np.dtype(dtype)
        self._staging = staging
        self._publish = publish
        self._finishing = threading.RLock()
        self._finished = False
        self._lock = _lock_staging(staging)
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        log.debug("running %s", shlex.join(command))
        try:
            self._process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr
            )
        except OSError as error:
            self._cleanup()
            raise StvsrError(f"cannot run ffmpeg ({command[0]}): {error.strerror}") from None

    def write(self, frame: np.ndarray) -> None:
        """One (H, W, 3) RGB frame: uint8, or uint16 over the full 0..65535
        range when the source has more than 8 bits."""
        if frame.shape != self.shape or frame.dtype != self.dtype:
            raise ValueError(f"expected a {self.shape} {self.dtype} frame, got {frame.shape} {frame.dtype}")
        try:
            self._process.stdin.write(memoryview(np.ascontiguousarray(frame)))
        except BrokenPipeError:
            raise self._failure() from None
        except BaseException:
            self.abort()
            raise

    def close(self) -> None:
        """Wait for ffmpeg to finish, then move the result onto the output path."""
        with self._finishing:
            if self._finished:
                return
            try:
                self._process.stdin.close()
                if self._process.wait() != 0:
                    raise self._failure()
                self._publish()
            except BrokenPipeError:
                raise self._failure() from None
            except BaseException:
                self.abort()
                raise
            self._cleanup()

    def abort(self) -> None:
        """Kill ffmpeg and remove everything it wrote; the output path is
        never touched."""
        with self._finishing:
            if self._finished:
                return
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            try:
                self._process.stdin.close()
            except BrokenPipeError:
                pass
            self._cleanup()

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _failure(self) -> StvsrError:
        """Abort, and the error that says why ffmpeg stopped."""
        if self._finished:  # aborted from another thread while writing
            return StvsrError(f"writing {self.output} was stopped")
        try:
            code = self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        self._stderr.seek(0)
        stderr = self._stderr.read().decode(errors="replace")
        log.debug("ffmpeg exited with %s:\n%s", code, stderr)
        reason = _ffmpeg_reason(stderr)
        self.abort()
        if not reason:
            reason = f"it stopped with exit status {code}" if code is not None else "it stopped reading frames"
        return StvsrError(f"ffmpeg could not write {self.output}: {reason}{_hint(reason)}")

    def _cleanup(self) -> None:
        self._finished = True
        self._stderr.close()
        shutil.rmtree(self._staging, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()  # after the folder is gone: a later run never sees it unlocked


def _lock_staging(staging: Path) -> IO[bytes] | None:
    """Lock a new staging folder for as long as this process lives: the
    kernel releases the lock when the process ends, however it ends, which
    is how `remove_leftovers` tells a killed run's folder from a live one.
    (ffmpeg does not inherit the handle: Popen closes it in the child.)"""
    if fcntl is None:
        return None
    handle = (staging / _LOCK).open("wb")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def _move_frames(frames: Path, output: Path) -> None:
    """An output directory that did not exist is the staged folder renamed;
    an existing one receives the files, its old numbered PNGs removed first
    so that no stale frames of a longer earlier run stay behind."""
    if not output.is_dir():
        os.rename(frames, output)
        return
    for old in _numbered_pngs(output):
        old.unlink()
    for new in sorted(frames.iterdir()):
        os.replace(new, output / new.name)


# Lines ffmpeg prints after the real cause, as the failure cascades; many
# end with the cause itself ("Error writing trailer: No space left on device").
_FOLLOW_UPS = (
    "Error while opening encoder", "Error sending frames", "Task finished with error", "Terminating thread",
    "Could not open encoder before EOF", "Nothing was written", "Conversion failed", "Error submitting",
    "Error closing", "Error writing trailer", "Error muxing", "Error opening output file",
    "Error opening output files", "Could not write header",
)
# Lines that say nothing at all.
_NOISE = re.compile(r"^(Last message repeated \d+ times?|\S+ @ 0x[0-9a-f]+\]?)$")


def _ffmpeg_reason(stderr: str) -> str:
    """The line that says why ffmpeg failed. ffmpeg logs the cause first and
    then the cascade it sets off, so the first line that is neither part of
    the cascade nor noise ('Last message repeated 1 times'), with its
    '[libx264 @ 0x...]' prefixes removed. When the cause appears only at the
    end of cascade lines (a full disk: 'Error submitting a packet to the
    muxer: No space left on device'), that cause."""
    lines = [re.sub(r"^(\[[^\]]*\]\s*)+", "", line).strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line and not _NOISE.match(line)]
    for line in lines:
        if not line.startswith(_FOLLOW_UPS):
            return line
    for line in lines:
        cause = re.search(r":\s*(?:-?\d+\s*)?\(?([A-Z][^():]*[a-z][^():]*?)\)?\s*$", line)
        if cause:
            return cause.group(1)
    return lines[0] if lines else ""


def _hint(reason: str) -> str:
    """What to do about a failure ffmpeg reports in words a user may not act on."""
    if "No space left on device" in reason:
        return "; free some space on that disk, or write the output to another one"
    return ""


def open_writer(
    output: Path | str, source: VideoInfo, *, width: int, height: int, fps: Fraction, options: EncodeOptions
) -> FrameWriter:
    """Start ffmpeg for `output`: a video file, or a directory of PNG frames
    (`is_frame_directory`). `width`/`height`/`fps` describe the frames to be
    written (4x the source's size, 2x its rate). Frames are uint16 when the
    source has more than 8 bits, else uint8. Says, once, what of the source
    the output cannot carry (`_warn_what_is_lost`).

    Does not repeat `check_output`/`check_encoder`; call them first, before
    the expensive work. An existing output is replaced only by `close()`.
    """
    frames = is_frame_directory(output)
    output = Path(output)
    size = {"width": width, "height": height, "dtype": np.uint16 if source.bit_depth > 8 else np.uint8}
    if frames:
        _warn_what_is_lost(source, output, None, fps)
        home = output if output.is_dir() else output.parent
        staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(output), dir=home))
        folder = staging / "frames"
        folder.mkdir()  # unlike mkdtemp's folder, with the user's usual permissions
        command = frames_command(folder / "%05d.png", source, width=width, height=height, fps=fps)
        return FrameWriter(command, output, staging, functools.partial(_move_frames, folder, output), **size)
    options = resolve_options(options, output, source.bit_depth)
    _warn_what_is_lost(source, output, _muxer_for(output), fps)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(output), dir=output.parent))
    target = staging / output.name  # same extension, so ffmpeg picks the same container
    try:
        command = video_command(target, source, width=width, height=height, fps=fps, options=options)
    except BaseException:
        shutil.rmtree(staging)
        raise
    return FrameWriter(command, output, staging, functools.partial(os.replace, target, output), **size)


def segment_suffix(output: Path | str, options: EncodeOptions) -> str:
    """The file type a run's segments are encoded into: MP4 for every codec
    it holds, since its timestamps are exact at any rate and the concat
    demuxer joins MP4 files frame-exactly (Matroska's millisecond clock
    would leave 59.94 fps frames unevenly spaced); else OUTPUT's own type.
    '' for PNG frames: a segment is then a folder."""
    if is_frame_directory(output):
        return ""
    codec = _encoders()[options.codec or default_encoder(_muxer_for(Path(output)))][1]
    return ".mp4" if _muxer_holds("mp4", codec) else Path(output).suffix


def open_segment_writer(
    target: Path, source: VideoInfo, *, width: int, height: int, fps: Fraction, options: EncodeOptions,
    first_number: int = 0,
) -> FrameWriter:
    """Start ffmpeg for one segment of a run: `target` is a video file
    (`segment_command`, options resolved by the caller) or, without a suffix,
    a folder of PNG frames numbered from `first_number`. As with
    `open_writer`, the segment appears at `target` only when `close()`
    succeeds, so a segment file that exists is complete."""
    size = {"width": width, "height": height, "dtype": np.uint16 if source.bit_depth > 8 else np.uint8}
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(target), dir=target.parent))
    if not target.suffix:
        folder = staging / "frames"
        folder.mkdir()
        command = frames_command(folder / "%05d.png", source, width=width, height=height, fps=fps,
                                 start_number=first_number)
        return FrameWriter(command, target, staging, functools.partial(os.rename, folder, target), **size)
    partial = staging / target.name
    command = segment_command(partial, source, width=width, height=height, fps=fps, options=options)
    return FrameWriter(command, target, staging, functools.partial(os.replace, partial, target), **size)


def join_segments(
    segments: list[Path], output: Path | str, source: VideoInfo, *, fps: Fraction, options: EncodeOptions,
    first_frame: int = 0, frames: int | None = None,
) -> None:
    """Put finished segments end to end into `output`, as one video with the
    source's other streams (`join_command`), or as one folder of PNG frames;
    through a staging folder as `open_writer` does, so `output` appears
    complete or not at all. (`say_what_is_lost` is for the start of the run.)"""
    frames_out = is_frame_directory(output)
    output = Path(output)
    home = output if frames_out and output.is_dir() else output.parent
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(output), dir=home))
    lock = _lock_staging(staging)
    try:
        if frames_out:
            folder = staging / "frames"
            folder.mkdir()
            for segment in segments:
                for png in sorted(segment.iterdir()):
                    os.replace(png, folder / png.name)
            _move_frames(folder, output)
            return
        listing = staging / "segments.txt"
        # The concat demuxer's quoting: inside '...', a ' is written '\''.
        listing.write_text("".join("file '%s'\n" % str(p.resolve()).replace("'", "'\\''") for p in segments))
        target = staging / output.name
        command = join_command(listing, target, source, fps=fps, audio=options.audio,
                               first_frame=first_frame, frames=frames)
        log.debug("running %s", shlex.join(command))
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True)
        if result.returncode != 0:
            stderr = result.stderr.decode(errors="replace")
            log.debug("ffmpeg exited with %s:\n%s", result.returncode, stderr)
            reason = _ffmpeg_reason(stderr) or f"it stopped with exit status {result.returncode}"
            raise StvsrError(f"ffmpeg could not join the segments into {output}: {reason}{_hint(reason)}")
        os.replace(target, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if lock is not None:
            lock.close()


def say_what_is_lost(source: VideoInfo, output: Path | str, fps: Fraction) -> None:
    """One warning for each thing of the source that `output` will not have
    (`open_writer` says it itself)."""
    frames = is_frame_directory(output)
    _warn_what_is_lost(source, Path(output), None if frames else _muxer_for(Path(output)), fps)


def _warn_what_is_lost(source: VideoInfo, output: Path, muxer: str | None, fps: Fraction) -> None:
    """One warning for each thing of the source that the output will not
    have; `muxer` None for PNG frames."""
    name = source.path.name
    if source.alpha:
        log.warning("%s has an alpha channel (transparency), which stvsr does not upscale: the output is opaque", name)
    if source.interlaced:
        log.warning("%s is interlaced (%s) and stvsr does not deinterlace it: the output is progressive and keeps "
                    "any combing; deinterlace it first (ffmpeg's bwdif or yadif filter) for a clean result",
                    name, source.interlaced)
    if source.timecode and muxer not in _TIMECODE_MUXERS:
        where = "PNG frames" if muxer is None else f"the {muxer} container"
        log.warning("%s starts at timecode %s, which %s cannot carry; write .mov, .mp4 or .mkv to keep it",
                    name, source.timecode, where)
    if muxer is None and source.rotation:
        log.warning("PNG frames cannot carry the %d degree display rotation; stored as coded", source.rotation)
    if muxer == "gif" and fps > _GIF_MAX_FPS:
        log.warning("a GIF cannot play more than %d frames a second (its frame delays are hundredths of a second, "
                    "and browsers slow shorter ones down): this %s fps one will stutter; write .mp4 or .webm for "
                    "smooth motion", _GIF_MAX_FPS, f"{float(fps):.4g}")


def try_encoder(
    output: Path | str, source: VideoInfo, *, width: int, height: int, fps: Fraction, options: EncodeOptions
) -> None:
    """Encode one black frame of the real size with the real settings
    (encoder, pixel format, crf, preset, container) into a temporary file,
    and raise StvsrError with ffmpeg's reason if that fails: what only shows
    when the encoder opens (a hardware encoder without its GPU or driver, a
    preset name the encoder does not know, a frame too large for it) then
    fails in a tenth of a second instead of after the first window. Nothing
    to try for PNG frames."""
    if is_frame_directory(output):
        return
    options = resolve_options(options, output, source.bit_depth)
    muxer = _muxer_for(Path(output))
    command = [*_pipe_input(source, width, height, fps), "-map", "0:v", *_video_options(source, muxer, options)]
    frame = width * height * 3 * (2 if source.bit_depth > 8 else 1)
    reason = _try_command(tuple(command), muxer, Path(output).suffix, frame)
    if reason is not None:
        hint = ("; it needs its GPU and driver, which are not usable here: use a software encoder such as libx264"
                if _HARDWARE.search(options.codec) else "")
        raise StvsrError(f"{options.codec} cannot encode {Path(output).name} here: {reason}{hint}")


@functools.lru_cache(maxsize=64)
def _try_command(command: tuple[str, ...], muxer: str, suffix: str, frame_bytes: int) -> str | None:
    """ffmpeg's reason for failing to encode one black frame with `command`
    (without its output), or None when it works. Cached: the outcome
    depends only on the command."""
    with tempfile.TemporaryDirectory(prefix="stvsr-try-") as folder:
        target = Path(folder) / f"try{suffix}"
        result = subprocess.run([*command, "-frames:v", "1", "-f", muxer, str(target)],
                                input=bytes(frame_bytes), capture_output=True)
    if result.returncode == 0:
        return None
    stderr = result.stderr.decode(errors="replace")
    log.debug("trying the encoder failed with %s:\n%s", result.returncode, stderr)
    return _ffmpeg_reason(stderr) or f"ffmpeg stopped with exit status {result.returncode}"
