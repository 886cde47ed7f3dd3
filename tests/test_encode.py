"""The encode stage: frames in, a finished video (or PNG folder) out, with the
source's audio and subtitles carried over, colour and rotation tagged, and
nothing left behind when it fails."""

from __future__ import annotations

import logging
import os
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from stvsr_cli.decode import ColorInfo, VideoInfo
from stvsr_cli.encode import (
    EncodeOptions,
    check_encoder,
    check_output,
    ffmpeg_exe,
    frames_command,
    is_frame_directory,
    open_writer,
    resolve_options,
    video_command,
)
from stvsr_cli.errors import StvsrError
from videos import make_video, stream_durations

FAST = EncodeOptions(preset="ultrafast")
OUT_FPS = Fraction(48)  # sources are 24 fps; the output has twice the rate


def source_info(path: Path, **changes) -> VideoInfo:
    """What `probe` would say about a file made here: the codec names from
    PyAV, everything else a plain 8-bit BT.709 24 fps video unless changed."""
    with av.open(str(path)) as container:
        audio = tuple(s.codec_context.name for s in container.streams.audio)
        subtitles = tuple(s.codec_context.name for s in container.streams.subtitles)
    fields = dict(
        path=path, container="mov,mp4,m4a,3gp,3g2,mj2", width=32, height=32, fps=Fraction(24), frame_count=12,
        duration=0.5, start_time=0.0, pix_fmt="yuv420p", bit_depth=8,
        color=ColorInfo("bt709", "tv", "bt709", "bt709", matrix_tagged=True), rotation=0,
        audio_codecs=audio, subtitle_codecs=subtitles,
    )  # fmt: skip
    fields.update(changes)
    return VideoInfo(**fields)


def encode(output: Path | str, source: VideoInfo, frames: list[np.ndarray], options: EncodeOptions = FAST) -> None:
    height, width = frames[0].shape[:2]
    with open_writer(output, source, width=width, height=height, fps=OUT_FPS, options=options) as writer:
        for frame in frames:
            writer.write(frame)


def flat(rgb: tuple[int, int, int], count: int = 24, size: int = 64) -> list[np.ndarray]:
    return [np.full((size, size, 3), rgb, np.uint8)] * count


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def first_pts(path: Path) -> dict[str, float]:
    """The first timestamp of each stream type, in seconds."""
    first: dict[str, float] = {}
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.pts is not None and packet.stream.type not in first:
                first[packet.stream.type] = float(packet.pts * packet.time_base)
    return first


def assert_in_sync(output: Path, source: Path, audio_slack: float = 0.0) -> None:
    """Each stream lasts as long as the source's, and starts at the same
    offset from the others, within one output frame (plus `audio_slack`)."""
    frame = 1 / float(OUT_FPS)
    got, want = stream_durations(output), stream_durations(source)
    assert got.keys() == want.keys()
    for kind in want:
        slack = audio_slack if kind == "audio" else 0.0
        assert abs(got[kind] - want[kind]) <= frame + slack, (kind, got, want)
    got, want = first_pts(output), first_pts(source)
    assert abs((got["video"] - got["audio"]) - (want["video"] - want["audio"])) <= frame + audio_slack, (got, want)


# ------------------------------------------------------------ audio and sync


def test_aac_audio_is_copied_into_mp4_in_sync(tmp_path):
    source = make_video(tmp_path / "in.mp4", frames=12, audio=True)
    output = tmp_path / "out.mp4"
    encode(output, source_info(source), flat((90, 120, 150)))

    with av.open(str(source)) as a, av.open(str(output)) as b:
        assert [s.codec_context.name for s in b.streams.audio] == ["aac"]
        original = [bytes(p) for p in a.demux(audio=0) if p.size][:5]
        copied = [bytes(p) for p in b.demux(audio=0) if p.size][:5]
    assert copied == original  # the same packets: copied, not re-encoded
    assert_in_sync(output, source)


def test_video_that_starts_after_its_audio_keeps_its_offset(tmp_path):
    plain = make_video(tmp_path / "plain.mp4", frames=12, audio=True)
    source = tmp_path / "late.mkv"
    ffmpeg("-i", str(plain), "-itsoffset", "0.25", "-i", str(plain), "-map", "1:v", "-map", "0:a", "-c", "copy",
           str(source))  # fmt: skip
    assert first_pts(source)["video"] - first_pts(source)["audio"] > 0.2

    output = tmp_path / "out.mkv"
    encode(output, source_info(source, start_time=0.25), flat((90, 120, 150)))
    assert_in_sync(output, source)
    with av.open(str(output)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 24  # no frame repeated to fill the offset


def test_pcm_audio_into_mp4_is_reencoded_not_lost(tmp_path):
    source = make_video(tmp_path / "in.mkv", frames=12, audio=True, audio_codec="pcm_s16le")
    output = tmp_path / "out.mp4"
    encode(output, source_info(source), flat((90, 120, 150)))
    with av.open(str(output)) as container:
        assert [s.codec_context.name for s in container.streams.audio] == ["aac"]
    # Re-encoded AAC packets start with a priming frame (negative pts, which
    # decoders skip) and end on a whole 1024-sample frame.
    assert_in_sync(output, source, audio_slack=1024 / 48000)


@pytest.fixture
def subtitled(tmp_path) -> Path:
    """An mkv with aac audio and a French SubRip subtitle stream."""
    srt = tmp_path / "subs.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:00,400\nBonjour\n")
    video = make_video(tmp_path / "plain.mp4", frames=12, audio=True)
    path = tmp_path / "subtitled.mkv"
    ffmpeg("-i", str(video), "-i", str(srt), "-map", "0", "-map", "1", "-c", "copy", "-metadata:s:s:0", "language=fra",
           str(path))  # fmt: skip
    return path


def test_subrip_into_mp4_becomes_mov_text_with_its_language(subtitled, tmp_path):
    output = tmp_path / "out.mp4"
    encode(output, source_info(subtitled), flat((90, 120, 150)))
    with av.open(str(output)) as container:
        (subtitle,) = container.streams.subtitles
        assert subtitle.codec_context.name == "mov_text"
        assert subtitle.language == "fra"
        assert len(container.streams.audio) == 1


def test_no_audio_drops_audio_and_subtitles(subtitled, tmp_path):
    output = tmp_path / "out.mp4"
    encode(output, source_info(subtitled), flat((90, 120, 150)), EncodeOptions(preset="ultrafast", audio=False))
    with av.open(str(output)) as container:
        assert [s.type for s in container.streams] == ["video"]


def test_bitmap_subtitle_that_mp4_cannot_hold_is_dropped_with_a_warning(tmp_path, caplog):
    source = source_info(make_video(tmp_path / "in.mp4"), subtitle_codecs=("pgssub", "subrip"))
    args = dict(source=source, width=64, height=64, fps=OUT_FPS, options=FAST)
    with caplog.at_level(logging.WARNING, logger="stvsr"):
        command = video_command(tmp_path / "out.mp4", **args)
    assert "hdmv_pgs_subtitle" in caplog.text
    assert "1:s:0" not in command  # PGS dropped, SubRip kept and converted
    assert command[command.index("1:s:1") + 1 :][:2] == ["-c:s:0", "mov_text"]
    # Matroska holds PGS: copied.
    command = video_command(tmp_path / "out.mkv", **args)
    assert command[command.index("1:s:0") + 1 :][:2] == ["-c:s:0", "copy"]


# ------------------------------------------------------------------ colour


# Tags as FFmpeg numbers them (AVColorSpace, AVColorRange, ...): 1 is BT.709,
# 6 SMPTE 170M (BT.601), 2 unspecified; range 1 is limited, 2 full.
@pytest.mark.parametrize(
    "colour, tags, swscale",
    [
        (ColorInfo("bt709", "tv", "bt709", "bt709", True), (1, 1, 1, 1), ("ITU709", "MPEG")),
        # BT.601 full range, primaries and transfer untagged: they stay so.
        (ColorInfo("smpte170m", "pc", None, None, False), (6, 2, 2, 2), ("ITU601", "JPEG")),
    ],
)
def test_colour_is_converted_with_the_source_matrix_and_tagged(tmp_path, colour, tags, swscale):
    source = source_info(make_video(tmp_path / "in.mp4"), color=colour)
    output = tmp_path / "out.mp4"
    rgb = (200, 50, 100)  # saturated: BT.601 and BT.709 read it 10+ levels apart
    encode(output, source, flat(rgb), EncodeOptions(preset="ultrafast", crf=10))

    with av.open(str(output)) as container:
        frame = next(container.decode(video=0))
    assert (frame.colorspace, frame.color_range, frame.color_primaries, frame.color_trc) == tags
    matrix, range_ = swscale
    decoded = frame.reformat(format="rgb24", src_colorspace=matrix, src_color_range=range_)
    centre = decoded.to_ndarray()[32, 32].astype(int)
    assert np.abs(centre - rgb).max() <= 3, centre


def test_ten_bit_source_keeps_more_than_eight_bits(tmp_path):
    source = source_info(make_video(tmp_path / "in.mp4"), bit_depth=10)
    # A ramp across four 8-bit levels: 8 bits could give at most 5 values.
    ramp = np.linspace(30000, 30000 + 4 * 257, 64)
    frame = np.repeat(np.repeat(ramp[None, :, None], 64, axis=0), 3, axis=2).round().astype(np.uint16)
    output = tmp_path / "out.mkv"
    encode(output, source, [frame] * 4, EncodeOptions(preset="ultrafast", crf=1))

    with av.open(str(output)) as container:
        decoded = next(container.decode(video=0))
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
    back = decoded.to_ndarray(format="rgb48le")[32, :, 1].astype(int)
    assert len(np.unique(back)) > 8
    assert np.abs(back - frame[32, :, 1]).mean() < 128


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_is_tagged_not_applied(tmp_path, rotation):
    source = source_info(make_video(tmp_path / "in.mp4"), rotation=rotation)
    output = tmp_path / "out.mp4"
    encode(output, source, [np.zeros((32, 64, 3), np.uint8)] * 4)
    with av.open(str(output)) as container:
        frame = next(container.decode(video=0))
    assert (frame.rotation - rotation) % 360 == 0  # 180 reads back as -180
    assert (frame.width, frame.height) == (64, 32)


# ------------------------------------------------------------------ PNG frames


def read_png(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format="rgb48le" if "48" in frame.format.name else "rgb24")


@pytest.mark.parametrize("bit_depth", [8, 10])
def test_frames_go_to_a_new_directory_as_numbered_pngs(tmp_path, bit_depth):
    # A late start must not turn into copies of the first frame.
    source = source_info(make_video(tmp_path / "in.mp4"), bit_depth=bit_depth, start_time=0.25)
    dtype = np.uint16 if bit_depth > 8 else np.uint8
    frames = [np.random.default_rng(i).integers(0, np.iinfo(dtype).max, (16, 24, 3), dtype=dtype) for i in range(3)]
    output = f"{tmp_path}/frames/"  # trailing separator: a directory to create
    encode(output, source, frames)

    folder = tmp_path / "frames"
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png", "00001.png", "00002.png"]
    for index, frame in enumerate(frames):
        back = read_png(folder / f"{index:05d}.png")
        assert back.dtype == dtype
        np.testing.assert_array_equal(back, frame)  # PNG is lossless, 16-bit stays 16-bit
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "in.mp4"]


def test_frames_replace_old_numbered_pngs_in_an_existing_directory(tmp_path):
    source = source_info(make_video(tmp_path / "in.mp4"))
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in ["00000.png", "00001.png", "00002.png", "notes.txt"]:
        (folder / name).write_text("old")
    encode(folder, source, flat((1, 2, 3), count=2, size=16))
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png", "00001.png", "notes.txt"]
    assert read_png(folder / "00001.png")[0, 0].tolist() == [1, 2, 3]


# ------------------------------------------------------------------ atomicity


def test_abort_midway_leaves_nothing(tmp_path):
    source = source_info(make_video(tmp_path / "in.mp4"))
    before = sorted(tmp_path.iterdir())
    writer = open_writer(tmp_path / "out.mp4", source, width=64, height=64, fps=OUT_FPS, options=FAST)
    for frame in flat((10, 20, 30), count=5):
        writer.write(frame)
    assert len(list(tmp_path.iterdir())) == len(before) + 1  # the hidden staging folder
    writer.abort()
    assert sorted(tmp_path.iterdir()) == before


def test_an_exception_in_the_caller_leaves_the_old_output_alone(tmp_path):
    source = source_info(make_video(tmp_path / "in.mp4"))
    output = tmp_path / "out.mp4"
    output.write_bytes(b"previous run")
    with pytest.raises(KeyboardInterrupt):
        with open_writer(output, source, width=64, height=64, fps=OUT_FPS, options=FAST) as writer:
            writer.write(flat((10, 20, 30))[0])
            raise KeyboardInterrupt
    assert output.read_bytes() == b"previous run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]


def test_ffmpeg_failure_is_one_line_with_its_reason_and_leaves_nothing(tmp_path):
    source = source_info(make_video(tmp_path / "in.mp4"))
    options = EncodeOptions(preset="bogus")  # libx264 only rejects it when the encoder opens
    with pytest.raises(StvsrError, match="invalid preset 'bogus'") as error:
        encode(tmp_path / "out.mp4", source, flat((10, 20, 30), count=40), options)  # more than a pipe buffer
    assert "\n" not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_a_frame_of_the_wrong_size_is_refused(tmp_path):
    source = source_info(make_video(tmp_path / "in.mp4"))
    with pytest.raises(ValueError, match="expected a"):
        encode(tmp_path / "out.mp4", source, flat((1, 2, 3), size=32) + flat((1, 2, 3), size=16))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


# ------------------------------------------------------------------ checks


def one_line_error(function, *args, **kwargs) -> str:
    with pytest.raises(StvsrError) as error:
        function(*args, **kwargs)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_check_output(tmp_path):
    source = make_video(tmp_path / "in.mp4")
    (tmp_path / "link.mp4").symlink_to(source)
    os.link(source, tmp_path / "hard.mp4")
    for same in ["link.mp4", "hard.mp4"]:
        assert "is the input file itself" in one_line_error(check_output, source, tmp_path / same, overwrite=True)
    (tmp_path / "old.mp4").write_bytes(b"")
    assert "--overwrite" in one_line_error(check_output, source, tmp_path / "old.mp4", overwrite=False)
    check_output(source, tmp_path / "old.mp4", overwrite=True)
    assert "does not exist" in one_line_error(check_output, source, tmp_path / "no" / "out.mp4", overwrite=False)
    assert "no container for .xyz" in one_line_error(check_output, source, tmp_path / "out.xyz", overwrite=False)
    assert "out/" in one_line_error(check_output, source, tmp_path / "out", overwrite=False)
    assert "directory" in one_line_error(check_output, source, tmp_path / "out.png", overwrite=False)
    check_output(source, tmp_path / "out.mkv", overwrite=False)


def test_check_output_for_frame_directories(tmp_path):
    source = make_video(tmp_path / "in.mp4")
    check_output(source, f"{tmp_path}/new/", overwrite=False)
    assert "does not exist" in one_line_error(check_output, source, f"{tmp_path}/no/new/", overwrite=False)
    assert "is a file" in one_line_error(check_output, source, f"{source}/", overwrite=True)
    folder = tmp_path / "frames"
    folder.mkdir()
    check_output(source, folder, overwrite=False)
    (folder / "00000.png").write_bytes(b"")
    assert "--overwrite" in one_line_error(check_output, source, folder, overwrite=False)
    check_output(source, folder, overwrite=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_check_output_refuses_a_read_only_folder(tmp_path):
    source = make_video(tmp_path / "in.mp4")
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    assert "permission denied" in one_line_error(check_output, source, folder / "out.mp4", overwrite=False)


def test_is_frame_directory(tmp_path):
    assert is_frame_directory(tmp_path)
    assert is_frame_directory("not/yet/")
    assert not is_frame_directory(tmp_path / "out.mp4")


@pytest.mark.parametrize(
    "options, output, expected",
    [
        (EncodeOptions(codec="nope"), "out.mp4", "no encoder named 'nope'"),
        (EncodeOptions(codec="h264"), "out.mp4", "libx264"),
        (EncodeOptions(codec="aac"), "out.mp4", "encodes audio, not video"),
        (EncodeOptions(), "out.webm", "cannot hold h264 video"),
        (EncodeOptions(pix_fmt="rgb24"), "out.mp4", "cannot take pixel format rgb24"),
        (EncodeOptions(codec="libx264rgb"), "out.mkv", "--pix-fmt"),
        (EncodeOptions(codec="libvpx-vp9", preset="slow"), "out.webm", "no presets"),
        (EncodeOptions(codec="mpeg4", crf=23), "out.mp4", "no crf"),
        (EncodeOptions(crf=60), "out.mp4", "use 0 to 51"),
        (EncodeOptions(codec="libvpx-vp9", crf=70), "out.webm", "use 0 to 63"),
    ],
)
def test_check_encoder_errors(options, output, expected):
    assert expected in one_line_error(check_encoder, options, Path(output))


def test_check_encoder_accepts_good_settings(tmp_path):
    check_encoder(EncodeOptions(), Path("out.mp4"))
    check_encoder(EncodeOptions(codec="libx265", crf=28, preset="slow", pix_fmt="yuv420p10le"), Path("out.mkv"))
    check_encoder(EncodeOptions(codec="libvpx-vp9", crf=30), Path("out.webm"))
    check_encoder(EncodeOptions(codec="mpeg4"), Path("out.mp4"))  # the default crf is dropped, not an error
    check_encoder(EncodeOptions(codec="nope"), f"{tmp_path}/")  # PNG frames: no encoder to check


def test_resolve_options_fits_the_defaults_to_the_encoder(caplog):
    assert resolve_options(EncodeOptions(), 8).pix_fmt == "yuv420p"
    assert resolve_options(EncodeOptions(), 10).pix_fmt == "yuv420p10le"
    assert resolve_options(EncodeOptions(codec="mpeg4"), 8).crf is None
    with caplog.at_level(logging.WARNING, logger="stvsr"):
        assert resolve_options(EncodeOptions(codec="libvpx"), 10).pix_fmt == "yuv420p"  # VP8 has no 10-bit
    assert "8-bit" in caplog.text


# ------------------------------------------------------------------ the command


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_video_command(tmp_path):
    source = source_info(
        make_video(tmp_path / "in.mkv"), width=32, height=18, fps=Fraction(30000, 1001), start_time=0.5, rotation=90,
        bit_depth=10, color=ColorInfo("bt709", "tv", None, "smpte2084", True), audio_codecs=("aac", "pcm_s16le"),
        subtitle_codecs=("subrip",),
    )
    args = dict(source=source, width=128, height=72, fps=Fraction(60000, 1001))
    command = video_command(tmp_path / "out.mp4", options=EncodeOptions(), **args)

    pipe = command[: command.index("pipe:0")]
    assert option(pipe, "-pixel_format") == "rgb48le"
    assert option(pipe, "-video_size") == "128x72"
    assert option(pipe, "-framerate") == "60000/1001"
    assert float(option(pipe, "-itsoffset")) == 0.5
    assert option(pipe, "-display_rotation") == "90" and "-noautorotate" in pipe
    assert option(command, "-i") == "pipe:0" and command[command.index("pipe:0") + 2] == str(source.path)
    assert option(command, "-c:v") == "libx264"
    assert option(command, "-pix_fmt") == "yuv420p10le"
    assert option(command, "-crf") == "18"
    assert "-preset" not in command
    assert option(command, "-movflags") == "+faststart"
    assert option(command, "-c:a:0") == "copy" and option(command, "-c:a:1") == "aac"
    assert option(command, "-c:s:0") == "mov_text"
    vf = option(command, "-vf")
    assert "out_color_matrix=bt709:out_range=tv" in vf
    assert "color_trc=smpte2084" in vf and "color_primaries" not in vf  # untagged stays untagged
    assert command[-1] == str(tmp_path / "out.mp4")

    webm = video_command(tmp_path / "out.webm", options=EncodeOptions(codec="libvpx-vp9", crf=30), **args)
    assert option(webm, "-c:a:0") == "libopus" and option(webm, "-c:s:0") == "webvtt"
    assert option(webm, "-b:v") == "0"  # crf alone would mean constrained quality
    assert "-movflags" not in webm

    silent = video_command(tmp_path / "out.mkv", options=EncodeOptions(audio=False, crf=None, preset="slow"), **args)
    assert not any(arg.startswith(("1:a", "1:s")) for arg in silent)
    assert "-crf" not in silent and option(silent, "-preset") == "slow"


def test_frames_command(tmp_path):
    source = source_info(make_video(tmp_path / "in.mp4"), bit_depth=10, rotation=90, start_time=0.5)
    command = frames_command(tmp_path / "%05d.png", source, width=64, height=48, fps=OUT_FPS)
    assert option(command, "-pixel_format") == "rgb48le"
    command = command[command.index("pipe:0") :]
    assert option(command, "-pix_fmt") == "rgb48be"
    assert option(command, "-start_number") == "0"
    assert option(command, "-f") == "image2"
    assert "-display_rotation" not in command and "-itsoffset" not in command
