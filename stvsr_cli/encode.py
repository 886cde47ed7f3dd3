"""Encode: upscaled RGB frames in, a finished video file (or a folder of PNGs) out.

One ffmpeg process does the whole job in one pass: raw frames arrive on its
stdin, the source file is its second input, and every audio and subtitle
stream of the source is carried over from there (copied when the output
container can hold it, re-encoded when not). Colour is converted to YUV with
the source's matrix and range and tagged like the source; rotation is tagged,
never applied to the pixels.

ffmpeg writes into a hidden staging folder next to the output; only a
successful `close()` moves the result onto the output path, so a failure or an
interrupt never leaves a half-written video where the user expects a finished
one.

Capabilities come from two places: the encoders (names, pixel formats,
options) from the ffmpeg binary that will run, and what a container can hold
from PyAV's libavformat (`avformat_query_codec`), which the binary does not
expose. The two are separate builds of FFmpeg; both are recent enough to agree
on the formats used here.
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

log = logging.getLogger("stvsr")

DEFAULT_CRF = 18

# Containers that take the streams with `-movflags +faststart` (index up front).
_MOOV_MUXERS = {"mp4", "mov", "ipod"}

# Codecs a muxer claims through avformat_query_codec but should not get:
# mov refuses Opus and FLAC at write_header ("opus only supported in MP4"),
# and PCM in MP4 (ISO 23003-5 'ipcm', new in FFmpeg 6.1) muxes but few
# players read it. Prefixes of codec names.
_AVOID = {"mov": ("opus", "flac"), "mp4": ("pcm_",)}

# Re-encode targets in order of preference: (codec, ffmpeg encoder). The
# first one the output container holds is used.
_AUDIO_TARGETS = (("aac", "aac"), ("opus", "libopus"))
_TEXT_SUBTITLE_TARGETS = (("mov_text", "mov_text"), ("ass", "ass"), ("webvtt", "webvtt"), ("subrip", "subrip"))

# Matrices the scale filter can convert to (its `out_color_matrix` values).
_SCALE_MATRICES = {"bt709", "fcc", "bt470bg", "smpte170m", "smpte240m", "bt2020nc"}

# libx264/libx265 declare crf up to FLT_MAX but clamp at 51; the other
# encoders state their real range in `ffmpeg -h encoder=NAME`.
_CRF_MAX = {"libx264": 51.0, "libx264rgb": 51.0, "libx265": 51.0}

# Encoders whose crf means constrained quality unless the bitrate is 0.
_CRF_NEEDS_ZERO_BITRATE = {"libvpx", "libvpx-vp9", "libaom-av1"}

_NUMBERED_PNG = re.compile(r"^\d{5,}\.png$")


@dataclass(frozen=True)
class EncodeOptions:
    """How the video stream is encoded; audio and subtitles follow the source.

    `crf` is 18 by default; an encoder without a crf option (mpeg4, say)
    then uses its own rate control, while any other crf value for such an
    encoder is an error (`check_encoder`). An explicit `--crf 18` cannot be
    told apart from the default and is treated like it.
    """

    codec: str = "libx264"
    crf: int | None = DEFAULT_CRF
    preset: str | None = None
    pix_fmt: str | None = None
    audio: bool = True


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
    a pixel format, preset or crf it does not take. (A preset name libx264
    does not know is only found when ffmpeg opens the encoder.) Nothing to
    check for PNG frames."""
    if is_frame_directory(output):
        return
    output = Path(output)
    name = options.codec
    encoders = _encoders()
    if name not in encoders:
        others = sorted(enc for enc, (_, codec) in encoders.items() if codec == name)
        hint = f"its encoders here: {', '.join(others)}" if others else "see `ffmpeg -encoders`"
        raise StvsrError(f"ffmpeg has no encoder named {name!r}; {hint}")
    kind, codec = encoders[name]
    if kind != "video":
        raise StvsrError(f"{name} encodes {kind}, not video; use a video encoder such as libx264")
    muxer = _muxer_for(output)
    if not _muxer_holds(muxer, codec):
        with av.open(os.devnull, "w", format=muxer) as container:
            suggestion = container.default_video_codec
        raise StvsrError(
            f"{output.name}: the {muxer} container cannot hold {codec} video ({name}); "
            f"use --codec {suggestion} or another extension such as .mkv"
        )
    help_ = _encoder_help(name)
    wanted = options.pix_fmt or "yuv420p"
    if help_.pix_fmts and wanted not in help_.pix_fmts:
        choices = " ".join(help_.pix_fmts)
        if options.pix_fmt:
            raise StvsrError(f"{name} cannot take pixel format {wanted}; use one of: {choices}")
        raise StvsrError(f"{name} cannot take the default pixel format yuv420p; pass --pix-fmt, one of: {choices}")
    if options.preset is not None and "preset" not in help_.options:
        raise StvsrError(f"{name} has no presets; leave out --preset")
    if options.crf is not None:
        if "crf" not in help_.options:
            if options.crf != DEFAULT_CRF:
                raise StvsrError(f"{name} has no crf setting; leave out --crf or use libx264, libx265 or libvpx-vp9")
        elif not 0 <= options.crf <= help_.crf_max:
            raise StvsrError(f"--crf {options.crf} is out of range for {name}; use 0 to {help_.crf_max:g}")


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
    crf_max: float


@functools.cache
def _encoder_help(name: str) -> _EncoderHelp:
    """Pixel formats and options of one encoder, from `ffmpeg -h encoder=NAME`."""
    text = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-h", f"encoder={name}"], capture_output=True, text=True
    ).stdout
    pix_fmts = re.search(r"Supported pixel formats:(.*)", text)
    options = dict(re.findall(r"^  -(\S+)\s+<\w+>\s+(.*)$", text, flags=re.MULTILINE))
    crf_max = _CRF_MAX.get(name, float("inf"))
    upper = re.search(r"to (\d+(?:\.\d+)?)\)", options.get("crf", ""))
    if name not in _CRF_MAX and upper:
        crf_max = float(upper.group(1))
    return _EncoderHelp(tuple(pix_fmts.group(1).split()) if pix_fmts else (), frozenset(options), crf_max)


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
    return codec in _muxer_codecs(muxer) and not codec.startswith(_AVOID.get(muxer, ()))


# ---------------------------------------------------------- the command


def resolve_options(options: EncodeOptions, bit_depth: int) -> EncodeOptions:
    """Fill in what the user left to us, for this encoder: the pixel format
    (10-bit for a >8-bit source when the encoder takes it, else 8-bit) and
    the default crf (dropped for an encoder without one)."""
    help_ = _encoder_help(options.codec)
    if options.pix_fmt is None:
        pix_fmt = "yuv420p10le" if bit_depth > 8 else "yuv420p"
        if help_.pix_fmts and pix_fmt not in help_.pix_fmts:
            log.warning("%s cannot encode %s; writing 8-bit yuv420p", options.codec, pix_fmt)
            pix_fmt = "yuv420p"
        options = replace(options, pix_fmt=pix_fmt)
    if options.crf is not None and "crf" not in help_.options:
        log.info("%s has no crf setting; using its default rate control", options.codec)
        options = replace(options, crf=None)
    return options


def video_command(
    target: Path, source: VideoInfo, *, width: int, height: int, fps: Fraction, options: EncodeOptions
) -> list[str]:
    """The ffmpeg command line that turns raw frames on stdin into `target`,
    carrying over the source's audio and subtitles. Pure apart from asking
    PyAV what the output container holds; `options` as given (see
    `resolve_options`), a missing pix_fmt meaning yuv420p or yuv420p10le."""
    muxer = _muxer_for(target)
    pix_fmt = options.pix_fmt or ("yuv420p10le" if source.bit_depth > 8 else "yuv420p")
    command = [*_pipe_input(source, width, height, fps), "-i", str(source.path), "-map", "0:v"]
    if options.audio:
        command += _source_streams(source, muxer)
    # Global metadata (title...) comes from the first input by default,
    # which is the pipe. (A per-stream -map_metadata would switch off the
    # default copying of every other stream's tags, language included.)
    command += ["-map_metadata", "1"]
    command += ["-fps_mode", "passthrough"]  # every frame written is a frame in the video, no more
    command += ["-vf", _colour_filter(source, pix_fmt), "-c:v", options.codec, "-pix_fmt", pix_fmt]
    if options.crf is not None:
        command += ["-crf", str(options.crf)]
        if options.codec in _CRF_NEEDS_ZERO_BITRATE:
            command += ["-b:v", "0"]
    if options.preset is not None:
        command += ["-preset", options.preset]
    if muxer in _MOOV_MUXERS:
        command += ["-movflags", "+faststart"]
    return [*command, str(target)]


def frames_command(pattern: Path, source: VideoInfo, *, width: int, height: int, fps: Fraction) -> list[str]:
    """The ffmpeg command line that writes raw frames on stdin as numbered
    PNGs; `pattern` is like 'dir/%05d.png'. 16-bit frames give 16-bit PNGs."""
    pix_fmt = "rgb48be" if source.bit_depth > 8 else "rgb24"
    return [
        *_pipe_input(source, width, height, fps, video=False),
        "-map", "0:v", "-c:v", "png", "-pix_fmt", pix_fmt, "-f", "image2", "-start_number", "0", str(pattern),
    ]


def _pipe_input(source: VideoInfo, width: int, height: int, fps: Fraction, video: bool = True) -> list[str]:
    """ffmpeg's global options and the raw-frame input on stdin.

    `-framerate` (the rawvideo demuxer's rate), not `-r`: an input `-r`
    makes ffmpeg restamp every frame from zero, which discards `-itsoffset`.
    For a video, `-itsoffset` puts the first frame where the source's first
    frame was relative to its audio, since ffmpeg shifts the source input so
    that its earliest stream starts at zero; PNG frames must not get it, as
    the image2 muxer would fill the gap with copies of the first frame.
    `-display_rotation` needs `-noautorotate`, or ffmpeg would turn the
    pixels instead of tagging them.
    """
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    command += ["-f", "rawvideo", "-pixel_format", "rgb48le" if source.bit_depth > 8 else "rgb24"]
    command += ["-video_size", f"{width}x{height}", "-framerate", f"{fps.numerator}/{fps.denominator}"]
    if video and source.start_time:
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
    one it holds; a bitmap subtitle with nowhere to go is dropped, loudly."""
    args: list[str] = []
    for index, name in enumerate(source.audio_codecs):
        codec = _canonical(name)
        encoder = "copy" if _muxer_holds(muxer, codec) else _target(_AUDIO_TARGETS, muxer)
        if encoder is None:
            raise StvsrError(
                f"the {muxer} container can hold no audio codec ffmpeg encodes here; "
                "use .mp4 or .mkv, or pass --no-audio"
            )
        if encoder != "copy":
            log.info("audio stream %d (%s) is re-encoded with %s: %s cannot hold it", index, codec, encoder, muxer)
        args += ["-map", f"1:a:{index}", f"-c:a:{index}", encoder]
    kept = 0
    for index, name in enumerate(source.subtitle_codecs):
        codec = _canonical(name)
        encoder = "copy" if _muxer_holds(muxer, codec) else None
        if encoder is None and _is_text_subtitle(codec):
            encoder = _target(_TEXT_SUBTITLE_TARGETS, muxer)
        if encoder is None:
            log.warning(
                "subtitle stream %d (%s) is dropped: %s cannot hold it and it cannot be converted to text; "
                "write .mkv to keep it", index, codec, muxer,
            )
            continue
        if encoder != "copy":
            log.info("subtitle stream %d (%s) is converted to %s", index, codec, encoder)
        args += ["-map", f"1:s:{index}", f"-c:s:{kept}", encoder]
        kept += 1
    return args


def _target(targets: tuple[tuple[str, str], ...], muxer: str) -> str | None:
    return next((encoder for codec, encoder in targets if _muxer_holds(muxer, codec)), None)


def _is_text_subtitle(codec: str) -> bool:
    try:
        return bool(av.codec.Codec(codec, "r").text_sub)
    except av.codec.codec.UnknownCodecError:
        return False


# ------------------------------------------------------------ the writers


class FrameWriter:
    """An ffmpeg process fed raw RGB frames on stdin, writing into a hidden
    staging folder; `close()` publishes the result (`publish` moves it onto
    the output path), `abort()` discards it.

    Use it as a context manager: leaving the block normally closes, leaving
    it with an exception (KeyboardInterrupt included) aborts. ffmpeg's stderr
    goes to an anonymous temporary file, so it can never fill a pipe and
    stall ffmpeg while we wait on its stdin.
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
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        self._finished = False
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
        return StvsrError(f"ffmpeg could not write {self.output}: {reason}")

    def _cleanup(self) -> None:
        self._finished = True
        self._stderr.close()
        shutil.rmtree(self._staging, ignore_errors=True)


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


# Lines ffmpeg prints after the real cause, as the failure cascades.
_FOLLOW_UPS = (
    "Error while opening encoder", "Error sending frames", "Task finished with error", "Terminating thread",
    "Could not open encoder before EOF", "Nothing was written", "Conversion failed", "Error submitting",
    "Error closing", "Error writing trailer", "Error muxing",
)


def _ffmpeg_reason(stderr: str) -> str:
    """The line that says why ffmpeg failed. ffmpeg logs the cause first and
    then the cascade it sets off, so the first line that is not part of the
    cascade, with its '[libx264 @ 0x...]' prefixes removed."""
    for line in stderr.splitlines():
        line = re.sub(r"^(\[[^\]]*\]\s*)+", "", line).strip()
        if line and not line.startswith(_FOLLOW_UPS):
            return line
    return ""


def open_writer(
    output: Path | str, source: VideoInfo, *, width: int, height: int, fps: Fraction, options: EncodeOptions
) -> FrameWriter:
    """Start ffmpeg for `output`: a video file, or a directory of PNG frames
    (`is_frame_directory`). `width`/`height`/`fps` describe the frames to be
    written (4x the source's size, 2x its rate). Frames are uint16 when the
    source has more than 8 bits, else uint8.

    Does not repeat `check_output`/`check_encoder`; call them first, before
    the expensive work. An existing output is replaced only by `close()`.
    """
    frames = is_frame_directory(output)
    output = Path(output)
    size = {"width": width, "height": height, "dtype": np.uint16 if source.bit_depth > 8 else np.uint8}
    if frames:
        if source.rotation:
            log.warning("PNG frames cannot carry the %d degree display rotation; stored as coded", source.rotation)
        home = output if output.is_dir() else output.parent
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.stvsr-", dir=home))
        folder = staging / "frames"
        folder.mkdir()  # unlike mkdtemp's folder, with the user's usual permissions
        command = frames_command(folder / "%05d.png", source, width=width, height=height, fps=fps)
        return FrameWriter(command, output, staging, functools.partial(_move_frames, folder, output), **size)
    options = resolve_options(options, source.bit_depth)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.stvsr-", dir=output.parent))
    target = staging / output.name  # same extension, so ffmpeg picks the same container
    try:
        command = video_command(target, source, width=width, height=height, fps=fps, options=options)
    except BaseException:
        shutil.rmtree(staging)
        raise
    return FrameWriter(command, output, staging, functools.partial(os.replace, target, output), **size)
