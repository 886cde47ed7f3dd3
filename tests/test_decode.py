"""Decode stage: probing, colour, the constant-rate grid, rotation, damaged files.

Colour test files are made by the ffmpeg binary (its own RGB->YUV
conversion, stored losslessly with FFV1), so decode() is checked against an
independent encoder rather than against its own equations.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import pytest

from stvsr_cli.decode import decode, probe
from stvsr_cli.errors import StvsrError

from videos import make_video, pattern

ORANGE = (200, 60, 30)


def ffmpeg(*args: object) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *map(str, args)], check=True)


def flat_video(
    path: Path, pix_fmt: str, matrix: str, color_range: str, *, tag: bool = True, width: int = 64, height: int = 48
) -> Path:
    """Three frames of ORANGE, converted by ffmpeg with `matrix`/`color_range`
    and tagged with them, or (tag=False) with the tags cleared."""
    raw = path.with_suffix(".rgb")
    raw.write_bytes(bytes(ORANGE) * (width * height) * 3)  # three frames
    tags = {"bt709": "bt709", "bt601": "smpte170m", "bt2020": "bt2020nc"}[matrix]
    clear = ",setparams=colorspace=unknown:range=unknown" if not tag else ""
    ffmpeg(
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", 24, "-i", raw,
        "-vf", f"scale=out_color_matrix={matrix}:out_range={color_range},format={pix_fmt}{clear}",
        *(["-colorspace", tags, "-color_range", color_range] if tag else []),
        "-c:v", "ffv1", path,
    )  # fmt: skip
    return path


def nearest_pattern(frame: np.ndarray, candidates: int = 12) -> int:
    """Which `pattern` index a decoded frame shows."""
    h, w = frame.shape[:2]
    errors = [np.abs(frame.astype(int) - pattern(i, w, h)).mean() for i in range(candidates)]
    return int(np.argmin(errors))


def write_timed(path: Path, times_ms: list[int], rate: int = 25) -> Path:
    """Frames `pattern(0..)` shown at the given milliseconds (a variable rate)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"crf": "4", "preset": "ultrafast"}
        for index, ms in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(pattern(index, 48, 32), format="rgb24")
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# probe


def test_probe_describes_video_audio_and_subtitles(tmp_path):
    video = make_video(
        tmp_path / "a.mkv", frames=8, width=48, height=32, fps=24, audio=True, audio_codec="libmp3lame", sample_rate=44100
    )
    subtitles = tmp_path / "a.srt"
    subtitles.write_text("1\n00:00:00,000 --> 00:00:00,200\nhello\n")
    path = tmp_path / "b.mkv"
    ffmpeg("-i", video, "-i", subtitles, "-map", 0, "-map", 1, "-c", "copy", path)

    info = probe(path)
    assert (info.path, info.container) == (path, "matroska,webm")
    assert (info.width, info.height, info.fps) == (48, 32, 24)
    assert info.frame_count == 8 and info.duration == pytest.approx(8 / 24, abs=0.002)
    assert (info.pix_fmt, info.bit_depth, info.rotation, info.start_time) == ("yuv420p", 8, 0, 0.0)
    # Codec names, not the decoders' names ('mp3float', 'srt').
    assert info.audio_codecs == ("mp3",)
    assert info.subtitle_codecs == ("subrip",)
    # PyAV writes no colour tags: small frames are read as BT.601, limited range.
    assert (info.color.matrix, info.color.range, info.color.matrix_tagged) == ("smpte170m", "tv", False)
    assert (info.color.primaries, info.color.transfer) == (None, None)


def test_start_time_is_the_video_delay_after_the_audio(tmp_path):
    video = make_video(tmp_path / "a.mkv", frames=8, audio=True)
    path = tmp_path / "late.mkv"
    ffmpeg("-i", video, "-itsoffset", 0.5, "-i", video, "-map", "1:v", "-map", "0:a", "-c", "copy", path)
    info = probe(path)
    assert info.start_time == pytest.approx(0.5, abs=0.01)
    # Matroska's DURATION tag is when the track ends, not how long it is:
    # read as a length, it made the whole file "look truncated" at the end.
    assert info.frame_count == 8 and info.duration == pytest.approx(8 / 24, abs=0.002)
    assert len(list(decode(info))) == 8


def _write_text(tmp_path: Path) -> Path:
    path = tmp_path / "notes.mp4"
    path.write_text("not a video, just some text\n" * 20)
    return path


def _write_noise(tmp_path: Path, name: str = "noise.mkv", size: int = 4096) -> Path:
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def _write_noise_bin(tmp_path: Path) -> Path:
    """ffmpeg's BIN text-art demuxer takes any .bin whose size is a multiple of 160."""
    return _write_noise(tmp_path, "noise.bin", 4000)


def _write_text_txt(tmp_path: Path) -> Path:
    """ffmpeg reads a .txt file as ANSI art."""
    path = tmp_path / "notes.txt"
    path.write_text("not a video, just some text\n" * 20)
    return path


def _write_wav(tmp_path: Path) -> Path:
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return path


def _write_cover_art_m4a(tmp_path: Path) -> Path:
    path = tmp_path / "song.m4a"
    ffmpeg(
        "-f", "lavfi", "-i", "sine=d=0.2", "-f", "lavfi", "-i", "color=s=16x16", "-map", 0, "-map", 1,
        "-c:a", "aac", "-c:v", "png", "-frames:v", 1, "-disposition:v:0", "attached_pic", path,
    )  # fmt: skip
    return path


def _write_mp4_without_moov(tmp_path: Path) -> Path:
    """PyAV writes the moov atom at the end: a download cut short loses it."""
    whole = make_video(tmp_path / "whole.mp4", frames=24).read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(whole[: len(whole) // 2])
    return path


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda tmp: tmp / "missing.mp4", "no such file"),
        (lambda tmp: tmp, "is a directory"),
        (_write_text, "not a video file"),
        (_write_noise, "not a video file"),
        (_write_noise_bin, "not a video file"),
        (_write_text_txt, "not a video file"),
        (_write_wav, "no video stream (only audio)"),
        (_write_cover_art_m4a, "no video stream (only audio, cover art)"),
        (_write_mp4_without_moov, "damaged or incomplete"),
    ],
    ids=["missing", "directory", "text", "noise", "noise-bin", "text-txt", "audio-only", "cover-art-only", "mp4-without-moov"],
)
def test_probe_rejects_what_is_not_a_video(tmp_path, make, words):
    with pytest.raises(StvsrError) as error:
        probe(make(tmp_path))
    message = str(error.value)
    assert words in message and "\n" not in message


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_probe_rejects_an_unreadable_file(tmp_path):
    path = make_video(tmp_path / "a.mp4", frames=2)
    path.chmod(0)
    with pytest.raises(StvsrError, match="permissions"):
        probe(path)


# colour


@pytest.mark.parametrize(
    "pix_fmt, matrix, color_range, expected_matrix",
    [
        ("yuv420p", "bt709", "tv", "bt709"),
        ("yuv420p", "bt601", "pc", "smpte170m"),
        ("yuv420p10le", "bt709", "tv", "bt709"),
        ("yuv444p10le", "bt2020", "pc", "bt2020nc"),
    ],
)
def test_decode_returns_the_encoded_colour(tmp_path, pix_fmt, matrix, color_range, expected_matrix):
    info = probe(flat_video(tmp_path / "flat.mkv", pix_fmt, matrix, color_range))
    assert (info.color.matrix, info.color.range, info.color.matrix_tagged) == (expected_matrix, color_range, True)
    frames = list(decode(info))
    assert len(frames) == 3
    deep = pix_fmt.endswith("10le")
    assert frames[0].dtype == (np.uint16 if deep else np.uint8) and frames[0].shape == (48, 64, 3)
    levels = frames[0].astype(float) / (257 if deep else 1)  # in 8-bit levels
    assert np.abs(levels - ORANGE).max() <= (1 if deep else 2)


def test_the_matrix_matters(tmp_path):
    """Reading a BT.709 file with the BT.601 matrix visibly shifts the
    colour, so the test above would catch decode() ignoring the tag."""
    info = probe(flat_video(tmp_path / "flat.mkv", "yuv420p", "bt709", "tv"))
    wrong = dataclasses.replace(info, color=dataclasses.replace(info.color, matrix="smpte170m"))
    frame = next(decode(wrong))
    assert np.abs(frame.astype(int) - ORANGE).max() > 10


@pytest.mark.parametrize("height, matrix", [(48, "bt601"), (720, "bt709")])
def test_untagged_video_uses_the_matrix_players_guess(tmp_path, height, matrix):
    info = probe(flat_video(tmp_path / "flat.mkv", "yuv420p", matrix, "tv", tag=False, width=16, height=height))
    assert info.color.matrix_tagged is False and info.color.range == "tv"
    assert info.color.matrix == {"bt601": "smpte170m", "bt709": "bt709"}[matrix]
    frame = next(decode(info))
    assert np.abs(frame.astype(int) - ORANGE).max() <= 2


def test_ten_bit_black_and_white_span_the_whole_uint16_range(tmp_path):
    """swscale's own rgb48 output tops out at 65283 for limited range."""
    raw = tmp_path / "bw.rgb"
    half = np.zeros((32, 64, 3), np.uint8)
    half[:, 32:] = 255
    raw.write_bytes(half.tobytes())
    path = tmp_path / "bw.mkv"
    ffmpeg(
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x32", "-r", 24, "-i", raw,
        "-vf", "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p10le",
        "-colorspace", "bt709", "-color_range", "tv", "-c:v", "ffv1", path,
    )  # fmt: skip
    frame = next(decode(probe(path)))
    assert (frame[:, :28] == 0).all() and (frame[:, 36:] == 65535).all()


@pytest.mark.parametrize(
    "pix_fmt, raw_format, pixel, matrix",
    [("bgr0", "rgb24", ORANGE, "gbr"), ("gbrp10le", "rgb24", ORANGE, "gbr"), ("gray", "gray", (200,), "smpte170m")],
)
def test_rgb_and_gray_sources(tmp_path, pix_fmt, raw_format, pixel, matrix):
    """RGB needs no matrix; untagged gray is full range, as ffmpeg reads it."""
    raw = tmp_path / "flat.raw"
    raw.write_bytes(bytes(pixel) * (32 * 16))
    path = tmp_path / "flat.mkv"
    ffmpeg(
        "-f", "rawvideo", "-pix_fmt", raw_format, "-s", "32x16", "-r", 24, "-i", raw,
        "-pix_fmt", pix_fmt, "-c:v", "ffv1", path,
    )  # fmt: skip
    info = probe(path)
    assert (info.pix_fmt, info.color.matrix, info.color.range) == (pix_fmt, matrix, "pc")
    frame = next(decode(info))
    deep = pix_fmt.endswith("10le")
    levels = frame.astype(float) / (257 if deep else 1)
    assert frame.dtype == (np.uint16 if deep else np.uint8)
    assert np.abs(levels - np.broadcast_to(pixel, (3,))).max() <= (1 if deep else 0)


# the constant-rate grid


@pytest.mark.parametrize("name, fps", [("cfr.mkv", 24), ("cfr.mp4", Fraction(30000, 1001))])
def test_constant_rate_input_comes_out_frame_for_frame(tmp_path, caplog, name, fps):
    path = make_video(tmp_path / name, frames=10, fps=fps)
    info = probe(path)
    assert info.fps == fps and info.frame_count == 10
    with caplog.at_level(logging.WARNING, logger="stvsr"):
        frames = list(decode(info))
    assert [nearest_pattern(f) for f in frames] == list(range(10))
    assert caplog.records == []


def test_variable_rate_is_made_constant_with_one_warning(tmp_path, caplog):
    # At 25 fps (40 ms slots): 120 ms is skipped, 210 ms shares the 200 ms slot.
    path = write_timed(tmp_path / "vfr.mkv", [0, 40, 80, 160, 200, 210, 240, 280])
    info = probe(path)
    assert info.fps == 25 and info.duration == pytest.approx(0.32)
    with caplog.at_level(logging.WARNING, logger="stvsr"):
        frames = list(decode(info))
    assert len(frames) == round(info.duration * info.fps) == info.frame_count
    assert [nearest_pattern(f) for f in frames] == [0, 1, 2, 2, 3, 4, 6, 7]
    assert [r.getMessage() for r in caplog.records] == [
        f"{path} has a variable frame rate; made it constant at 25 fps by repeating 1 and dropping 1 frames"
    ]


def test_frames_without_timestamps_are_taken_in_order(tmp_path, caplog):
    path = make_video(tmp_path / "raw.h264", frames=6, fps=24)  # an elementary stream: no timestamps
    info = probe(path)
    assert info.fps == 24  # the bitstream's rate, not the demuxer's default of 25
    with caplog.at_level(logging.WARNING, logger="stvsr"):
        frames = list(decode(info))
    assert [nearest_pattern(f) for f in frames] == list(range(6))
    assert caplog.records == []


def _joined_ts(tmp_path: Path, second_offset: float) -> Path:
    """Two six-frame MPEG-TS recordings joined byte for byte; the second's
    clock starts over, `second_offset` seconds later than the first's did."""
    make_video(tmp_path / "part.mp4", frames=6)
    first, second = tmp_path / "first.ts", tmp_path / "second.ts"
    ffmpeg("-i", tmp_path / "part.mp4", "-c", "copy", first)
    ffmpeg("-i", tmp_path / "part.mp4", "-c", "copy", "-output_ts_offset", second_offset, second)
    path = tmp_path / "joined.ts"
    path.write_bytes(first.read_bytes() + second.read_bytes())
    return path


def test_a_clock_that_starts_over_continues_the_grid(tmp_path, caplog):
    path = _joined_ts(tmp_path, 0)
    with caplog.at_level(logging.WARNING, logger="stvsr"):
        frames = list(decode(probe(path)))
    assert [nearest_pattern(f) for f in frames] == [*range(6), *range(6)]
    assert caplog.records == []


def test_a_clock_leap_in_a_stream_container_is_not_a_pause(tmp_path, caplog):
    """30 s at 24 fps would be 720 repeats of one frame."""
    path = _joined_ts(tmp_path, 30)
    with caplog.at_level(logging.WARNING, logger="stvsr"):
        frames = list(decode(probe(path)))
    assert [nearest_pattern(f) for f in frames] == [*range(6), *range(6)]
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: the timestamps leap 29.8 s ahead at frame 7; taking it for a clock discontinuity, not a pause, "
        "and going on without a gap"
    ]


def test_a_long_pause_in_a_file_container_is_kept(tmp_path):
    """Matroska timestamps are authored: 12 s without a new frame is a still
    screen, and repeating the frame keeps the audio in sync."""
    path = write_timed(tmp_path / "pause.mkv", [0, 40, 12040])
    frames = list(decode(probe(path)))
    assert len(frames) == 302 and nearest_pattern(frames[-1]) == 2


def test_decode_streams_in_flat_memory(tmp_path):
    info = probe(make_video(tmp_path / "long.mkv", frames=150, width=64, height=64))
    tracemalloc.start()
    try:
        count = sum(1 for _ in decode(info))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # One frame's float32 working arrays come to about 25 uint8 frames.
    assert count == 150 and peak < 60 * (64 * 64 * 3)


# rotation


@pytest.mark.parametrize("degrees, expected", [(90, 90), (180, 180), (270, -90)])
def test_rotation_is_reported_and_frames_stay_as_coded(tmp_path, degrees, expected):
    plain = make_video(tmp_path / "plain.mp4", frames=2, width=48, height=32)
    path = tmp_path / "rotated.mp4"
    ffmpeg("-display_rotation", degrees, "-i", plain, "-c", "copy", path)
    info = probe(path)
    assert info.rotation == expected and (info.width, info.height) == (48, 32)
    assert all(frame.shape == (32, 48, 3) for frame in decode(info))


# damaged files


def test_truncated_file_yields_what_it_has_then_says_so(tmp_path):
    whole = make_video(tmp_path / "whole.mkv", frames=48).read_bytes()
    path = tmp_path / "cut.mkv"
    path.write_bytes(whole[: len(whole) // 2])
    frames = []
    with pytest.raises(StvsrError, match=r"looks truncated: decoded \d+ of 48 frames") as error:
        frames.extend(decode(probe(path)))
    assert 0 < len(frames) < 40 and f"decoded {len(frames)} of" in str(error.value)
    assert [nearest_pattern(f, candidates=48) for f in frames] == list(range(len(frames)))


@pytest.mark.parametrize("container, fraction", [("mkv", 0.45), ("mkv", 0.75), ("ts", 0.3), ("ts", 0.75)])
def test_a_cut_file_is_not_taken_for_variable_frame_rate(tmp_path, caplog, container, fraction):
    """Cutting a file with B frames loses frames shown just before its last
    ones, which read as gaps in the timestamps: no variable-frame-rate
    warning for that (MPEG-TS has no length to tell a cut by; Matroska does)."""
    whole = tmp_path / f"whole.{container}"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=128x96:r=25:d=4", "-c:v", "libx264", "-bf", "3", "-g", "12", whole)
    cut = tmp_path / f"cut.{container}"
    data = whole.read_bytes()
    cut.write_bytes(data[: int(len(data) * fraction)])
    with caplog.at_level(logging.WARNING, logger="stvsr"):
        if container == "mkv":
            with pytest.raises(StvsrError, match="looks truncated"):
                list(decode(probe(cut)))
        else:
            assert 0 < len(list(decode(probe(cut)))) < 100
    assert caplog.records == []


def test_garbage_in_the_middle_names_the_frame_and_the_repair(tmp_path):
    data = bytearray(make_video(tmp_path / "whole.mp4", frames=48).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 1000] = np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    path = tmp_path / "damaged.mp4"
    path.write_bytes(bytes(data))
    with pytest.raises(StvsrError, match=r"is damaged: decoding failed at frame \d+ .*ffmpeg -i") as error:
        list(decode(probe(path)))
    assert "\n" not in str(error.value)


def test_a_video_stream_of_garbage(tmp_path):
    """Not even the picture format can be found: probe has to say so."""
    path = tmp_path / "junk.mkv"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height = 48, 32
        for index in range(10):
            packet = av.Packet(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, index, index, Fraction(1, 24)
            container.mux(packet)
    with pytest.raises(StvsrError, match="could not be decoded at all"):
        probe(path)


def test_a_video_stream_with_no_decodable_frame(tmp_path):
    """Only the frames after the keyframe: the decoder has nothing to start from."""
    source = make_video(tmp_path / "whole.mkv", frames=12)
    path = tmp_path / "no-keyframe.mkv"
    with av.open(str(source)) as src, av.open(str(path), "w") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None and not packet.is_keyframe:
                packet.stream = stream
                dst.mux(packet)
    with pytest.raises(StvsrError, match="no frames could be decoded"):
        list(decode(probe(path)))


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_training_reads_runs_of_frames_as_decode_gives_them(tmp_path, container):
    """count_frames and read_frames, training's random access: any run of
    frames, found by seeking, equals those `decode` yields; fewer at the end."""
    from stvsr_cli.decode import count_frames, read_frames

    info = probe(make_video(tmp_path / f"v.{container}", frames=30))
    everything = list(decode(info))
    assert count_frames(info) == len(everything) == 30
    for start in (0, 11, 23):
        run = read_frames(info, start, 7)
        assert len(run) == 7 and all(np.array_equal(a, b) for a, b in zip(run, everything[start : start + 7]))
    assert len(read_frames(info, 26, 7)) == 4
