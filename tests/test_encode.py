"""The encode stage: frames in, a finished video (or PNG folder) out, with the
source's audio and subtitles carried over, colour and rotation tagged, and
nothing left behind when it fails."""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from stvsr_cli.decode import ColorInfo, VideoInfo, probe
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
from videos import make_video, read_video, stream_durations

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


# -------------------------------------------- what the extension brings


def streams_of(path: Path) -> list[tuple[str, str]]:
    with av.open(str(path)) as container:
        return [(s.type, s.codec_context.name) for s in container.streams if s.codec_context]


@pytest.mark.parametrize(
    "name, streams",
    [("out.webm", [("video", "vp9"), ("audio", "opus")]),
     ("out.ts", [("video", "h264"), ("audio", "aac")]),
     ("out.gif", [("video", "gif")])],
)
def test_each_extension_works_in_one_run_with_its_own_defaults(tmp_path, caplog, name, streams):
    """No --codec, --pix-fmt or --no-audio needed: .webm gets VP9 and Opus,
    .ts H.264 and the AAC copied, .gif a palette a frame and no sound."""
    source = make_video(tmp_path / "in.mp4", frames=12, audio=True)
    with caplog.at_level(logging.WARNING, logger="stvsr"):
        encode(tmp_path / name, source_info(source), flat((90, 120, 150), count=8), EncodeOptions())
    assert streams_of(tmp_path / name) == streams
    assert len(read_video(tmp_path / name)[0]) == 8
    dropped = [r.getMessage() for r in caplog.records if "holds no audio" in r.getMessage()]
    assert dropped == (["the gif container holds no audio: the audio of in.mp4 is left out; "
                        "write .mp4 or .mkv to keep it"] if name == "out.gif" else [])


def test_a_gif_of_more_than_50_fps_is_warned_about(tmp_path, caplog):
    source = source_info(make_video(tmp_path / "in.mp4"))
    with caplog.at_level(logging.WARNING, logger="stvsr"):
        with open_writer(tmp_path / "out.gif", source, width=16, height=16, fps=Fraction(60),
                         options=EncodeOptions()) as writer:
            writer.write(flat((1, 2, 3), count=1, size=16)[0])
    assert "this 60 fps one will stutter" in caplog.text


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


def test_a_percent_sign_in_the_folders_is_not_a_pattern(tmp_path):
    """ffmpeg reads '%d' in an image sequence's path as a frame number."""
    source = source_info(make_video(tmp_path / "in.mp4"))
    folder = tmp_path / "out" / "50%d"
    folder.parent.mkdir()
    encode(f"{folder}/", source, flat((1, 2, 3), count=3, size=16))
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png", "00001.png", "00002.png"]
    (tmp_path / "v%02d").mkdir()
    encode(tmp_path / "v%02d" / "out.mp4", source, flat((1, 2, 3), count=3, size=16))
    assert len(read_video(tmp_path / "v%02d" / "out.mp4")[0]) == 3


# ------------------------------------------- what the output cannot carry


def timecoded(tmp_path: Path, timecode: str = "01:00:00:12") -> Path:
    path = tmp_path / "tc.mov"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=32x32:r=25:d=0.2", "-c:v", "libx264", "-timecode", timecode, str(path))
    return path


def timecode_of(path: Path) -> str | None:
    with av.open(str(path)) as container:
        for metadata in (*(s.metadata for s in container.streams), container.metadata):
            if metadata.get("timecode") or metadata.get("TIMECODE"):
                return metadata.get("timecode") or metadata.get("TIMECODE")
    return None


@pytest.mark.parametrize("name", ["out.mov", "out.mp4", "out.mkv"])
def test_the_timecode_is_kept_at_the_new_frame_rate(tmp_path, caplog, name):
    source = probe(timecoded(tmp_path))
    assert source.timecode == "01:00:00:12"
    with caplog.at_level(logging.WARNING, logger="stvsr"):
        encode(tmp_path / name, source, flat((1, 2, 3), count=4, size=32))
    assert timecode_of(tmp_path / name) == "01:00:00:24"  # frame 12 at 25 fps is frame 24 at 50
    assert "timecode" not in caplog.text


@pytest.mark.parametrize("timecode, fps, doubled", [
    ("01:00:00:12", Fraction(25), "01:00:00:24"),
    ("00:00:59;29", Fraction(30000, 1001), "00:00:59;58"),
    ("00:01:00;02", Fraction(30000, 1001), "00:01:00;04"),  # drop-frame: ;00 and ;01 do not exist at 1:00
    ("00:10:00;00", Fraction(30000, 1001), "00:10:00;00"),  # ... but do every tenth minute
    ("10:00:00:23", Fraction(24000, 1001), "10:00:00:46"),
])
def test_timecodes_name_the_same_instant_at_twice_the_rate(timecode, fps, doubled):
    from stvsr_cli.encode import double_rate_timecode

    assert double_rate_timecode(timecode, fps) == doubled


def test_what_the_output_cannot_carry_is_said_once_each(tmp_path, caplog):
    """A timecode into MPEG-TS, alpha, interlacing: one warning each."""
    source = replace(probe(timecoded(tmp_path)), alpha=True, interlaced="top field first")
    with caplog.at_level(logging.WARNING, logger="stvsr"):
        encode(tmp_path / "out.ts", source, flat((1, 2, 3), count=2, size=32))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3, messages
    assert "tc.mov starts at timecode 01:00:00:12, which the mpegts container cannot carry" in messages[2]
    assert "alpha channel" in messages[0] and "the output is opaque" in messages[0]
    assert "interlaced (top field first)" in messages[1] and "the output is progressive" in messages[1]


def test_probe_finds_alpha_and_interlacing(tmp_path):
    alpha, interlaced = tmp_path / "alpha.mov", tmp_path / "interlaced.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=32x32:r=25:d=0.2", "-vf", "format=rgba", "-c:v", "png", str(alpha))
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=32x32:r=25:d=0.2", "-c:v", "libx264", "-flags", "+ilme+ildct",
           "-x264opts", "tff=1", str(interlaced))
    plain = probe(make_video(tmp_path / "plain.mp4"))
    assert (probe(alpha).alpha, probe(alpha).interlaced) == (True, None)
    assert (probe(interlaced).alpha, probe(interlaced).interlaced) == (False, "top field first")
    assert (plain.alpha, plain.interlaced, plain.timecode) == (False, None, None)


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


@pytest.mark.skipif(os.name != "posix", reason="staging folders are locked with flock")
def test_a_killed_runs_leftovers_are_removed_and_a_live_runs_are_left_alone(tmp_path, caplog):
    from stvsr_cli.encode import remove_leftovers

    source = source_info(make_video(tmp_path / "in.mp4"))
    dead = tmp_path / ".out.mp4.stvsr-dead1234"  # what kill -9 leaves: a playable partial video, unlocked
    dead.mkdir()
    (dead / ".lock").write_bytes(b"")
    (dead / "out.mp4").write_bytes(b"partial")
    old = tmp_path / ".out.mp4.stvsr-old98765"  # no lock file: an older stvsr's, or just being made
    old.mkdir()
    writer = open_writer(tmp_path / "out.mp4", source, width=64, height=64, fps=OUT_FPS, options=FAST)
    try:
        (live,) = (p for p in tmp_path.iterdir() if p.name.startswith(".out.mp4.stvsr-") and p not in (dead, old))
        with caplog.at_level(logging.WARNING, logger="stvsr"):
            remove_leftovers(tmp_path / "out.mp4")
        assert not dead.exists() and old.exists() and live.exists()
        messages = sorted(r.getMessage() for r in caplog.records)
        assert len(messages) == 3
        assert messages[0].startswith(f"{old} is probably the unfinished output of an earlier stvsr run")
        assert messages[1].startswith("another stvsr run is writing out.mp4 right now")
        assert messages[2] == f"removed {dead}, the unfinished output of an earlier run into out.mp4 that was killed"
        writer.write(flat((10, 20, 30))[0])
    finally:
        writer.abort()
    assert not live.exists()


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


# Real stderr of the ffmpeg that stvsr runs (9.0.2), writing an MP4 and an MKV
# onto a 200 KB tmpfs that filled up (`mount -t tmpfs -o size=200k`), and an
# MP4 onto one that was full from the start.
DISK_FULL_MP4 = """\
[vost#0:0/libx264 @ 0x55b742b664c0] Error submitting a packet to the muxer: No space left on device
    Last message repeated 1 times
[out#0/mp4 @ 0x55b742b65700] Error muxing a packet
[out#0/mp4 @ 0x55b742b65700] Task finished with error code: -28 (No space left on device)
[out#0/mp4 @ 0x55b742b65700] Terminating thread with return code -28 (No space left on device)
[out#0/mp4 @ 0x55b742b65700] Error writing trailer: No space left on device
[out#0/mp4 @ 0x55b742b65700] Error closing file: No space left on device
"""
DISK_FULL_MKV = """\
[out#0/matroska @ 0x56488f304d80] Error writing trailer: No space left on device
[out#0/matroska @ 0x56488f304d80] Error closing file: No space left on device
"""
DISK_FULL_AT_THE_START = """\
[out#0/mp4 @ 0x5599eb20b880] Could not write header (incorrect codec parameters ?): No space left on device
[vf#0:0 @ 0x5599eb22f3c0] Error sending frames to consumers: No space left on device
[vf#0:0 @ 0x5599eb22f3c0] Task finished with error code: -28 (No space left on device)
[vf#0:0 @ 0x5599eb22f3c0] Terminating thread with return code -28 (No space left on device)
[out#0/mp4 @ 0x5599eb20b880] Nothing was written into output file, because at least one of its streams received \
no packets.
"""
NO_CUDA = """\
[h264_nvenc @ 0x55d568019f80] Cannot load libcuda.so.1
[vost#0:0/h264_nvenc @ 0x55d568019c00] [enc:h264_nvenc @ 0x55d568019f00] Error while opening encoder - maybe \
incorrect parameters such as bit_rate, rate, width or height.
[vf#0:0 @ 0x55d568035b40] Error sending frames to consumers: Operation not permitted
[vost#0:0/h264_nvenc @ 0x55d568019c00] Task finished with error code: -22 (Invalid argument)
"""


@pytest.mark.parametrize("stderr, reason", [(DISK_FULL_MP4, "No space left on device"),
                                            (DISK_FULL_MKV, "No space left on device"),
                                            (DISK_FULL_AT_THE_START, "No space left on device"),
                                            (NO_CUDA, "Cannot load libcuda.so.1")])
def test_the_reason_ffmpeg_gives_is_found_under_its_cascade(stderr, reason):
    from stvsr_cli.encode import _ffmpeg_reason

    assert _ffmpeg_reason(stderr) == reason


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_named_with_what_to_do(tmp_path, monkeypatch):
    """The staging file is replaced by /dev/full, which refuses every write as a full disk does."""
    source = source_info(make_video(tmp_path / "in.mp4"))
    monkeypatch.setattr("stvsr_cli.encode.video_command",
                        lambda target, *args, **kwargs: [*real_video_command(target, *args, **kwargs)[:-1],
                                                         "-f", "matroska", "/dev/full"])
    with pytest.raises(StvsrError) as error:
        encode(tmp_path / "out.mkv", source, flat((10, 20, 30), count=30))
    assert str(error.value).endswith("No space left on device; free some space on that disk, or write the output "
                                     "to another one"), error.value
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


real_video_command = video_command


def test_an_encoder_that_cannot_start_fails_before_any_frame(tmp_path):
    """A frame through the real settings finds what only the encoder knows."""
    from stvsr_cli.encode import try_encoder

    source = source_info(make_video(tmp_path / "in.mp4"))
    size = dict(width=64, height=64, fps=OUT_FPS)
    try_encoder(tmp_path / "out.mp4", source, **size, options=FAST)
    message = one_line_error(try_encoder, tmp_path / "out.mp4", source, **size, options=EncodeOptions(preset="bogus"))
    assert message.startswith("libx264 cannot encode out.mp4 here: ") and "bogus" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


@pytest.mark.skipif(os.path.exists("/dev/nvidia0"), reason="NVENC may work on a machine with an NVIDIA GPU")
def test_a_hardware_encoder_without_its_gpu_fails_at_once(tmp_path):
    from stvsr_cli.encode import try_encoder

    source = source_info(make_video(tmp_path / "in.mp4"))
    message = one_line_error(try_encoder, tmp_path / "out.mp4", source, width=64, height=64, fps=OUT_FPS,
                             options=EncodeOptions(codec="h264_nvenc"))
    assert message.startswith("h264_nvenc cannot encode out.mp4 here: ") and "use a software encoder" in message


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
        (EncodeOptions(codec="nope"), "out.mp4", "no encoder named 'nope'; `stvsr encoders` lists"),
        (EncodeOptions(codec="h264"), "out.mp4", "libx264"),
        (EncodeOptions(codec="aac"), "out.mp4", "encodes audio, not video"),
        (EncodeOptions(codec="libx264"), "out.webm", "cannot hold h264 video (libx264); leave out --codec to get "
                                                     "libvpx-vp9"),
        (EncodeOptions(codec="libvpx-vp9"), "out.mov", "cannot hold vp9"),
        (EncodeOptions(codec="libvpx-vp9"), "out.ts", "cannot hold vp9"),
        (EncodeOptions(pix_fmt="rgb24"), "out.mp4", "cannot take pixel format rgb24"),
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
    check_encoder(EncodeOptions(codec="libx264rgb"), Path("out.mkv"))  # an RGB format is picked, not refused
    for name in ("out.ts", "out.webm", "out.gif", "out.mov", "out.mkv"):  # the defaults of every extension
        check_encoder(EncodeOptions(), Path(name))
    check_encoder(EncodeOptions(codec="nope"), f"{tmp_path}/")  # PNG frames: no encoder to check


@pytest.mark.parametrize(
    "name, codec, pix_fmt",
    [("out.mp4", "libx264", "yuv420p"), ("out.mkv", "libx264", "yuv420p"), ("out.mov", "libx264", "yuv420p"),
     ("out.ts", "libx264", "yuv420p"), ("out.webm", "libvpx-vp9", "yuv420p"), ("out.gif", "gif", "pal8"),
     ("out.avi", "libx264", "yuv420p")],
)
def test_the_extension_picks_a_working_encoder_and_pixel_format(name, codec, pix_fmt):
    resolved = resolve_options(EncodeOptions(), name, 8)
    assert (resolved.codec, resolved.pix_fmt) == (codec, pix_fmt)


def test_resolve_options_fits_the_defaults_to_the_encoder(caplog):
    assert resolve_options(EncodeOptions(), "out.mp4", 8).pix_fmt == "yuv420p"
    assert resolve_options(EncodeOptions(), "out.mp4", 10).pix_fmt == "yuv420p10le"
    assert resolve_options(EncodeOptions(codec="mpeg4"), "out.mp4", 8).crf is None
    assert resolve_options(EncodeOptions(), "out.gif", 8).crf is None  # gif has no crf
    assert resolve_options(EncodeOptions(codec="libx264rgb"), "out.mkv", 8).pix_fmt in ("bgr0", "bgr24", "rgb24")
    assert resolve_options(EncodeOptions(codec="prores_ks"), "out.mov", 10).pix_fmt == "yuv422p10le"
    with caplog.at_level(logging.WARNING, logger="stvsr"):
        assert resolve_options(EncodeOptions(codec="libvpx"), "out.webm", 10).pix_fmt == "yuv420p"  # VP8: no 10-bit
    assert "8-bit" in caplog.text


# --------------------------------------------------- what the containers hold

# Every container the README names, and the codecs that matter in them:
# what stvsr encodes to, and the usual audio and subtitle codecs of sources.
README_CONTAINERS = {"mp4": "mp4", "mov": "mov", "matroska": "mkv", "webm": "webm", "mpegts": "ts", "gif": "gif"}
VIDEO_CODECS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1", "mpeg4": "mpeg4",
                "mpeg2video": "mpeg2video", "prores": "prores_ks", "gif": "gif"}
AUDIO_CODECS = {"aac": "aac", "mp3": "libmp3lame", "opus": "libopus", "vorbis": "libvorbis", "flac": "flac",
                "ac3": "ac3", "mp2": "mp2", "pcm_s16le": "pcm_s16le"}
SUBTITLE_CODECS = {"subrip": "srt", "ass": "ass", "webvtt": "webvtt", "mov_text": "mov_text"}


@pytest.fixture(scope="module")
def one_stream_files(tmp_path_factory) -> dict[str, tuple[str, Path]]:
    """A tiny file holding one stream of each codec, to stream-copy."""
    folder = tmp_path_factory.mktemp("codecs")
    files = {}
    for codec, encoder in VIDEO_CODECS.items():
        pix_fmt = {"gif": "pal8", "prores": "yuv422p10le"}.get(codec, "yuv420p")
        path = folder / f"{codec}.nut"
        ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x64:r=10:d=0.3", "-c:v", encoder, "-pix_fmt", pix_fmt, str(path))
        files[codec] = ("video", path)
    for codec, encoder in AUDIO_CODECS.items():
        path = folder / f"{codec}.nut"
        ffmpeg("-f", "lavfi", "-i", "sine=d=0.3:r=48000", "-c:a", encoder, str(path))
        files[codec] = ("audio", path)
    (folder / "in.srt").write_text("1\n00:00:00,000 --> 00:00:00,200\nhello\n")
    for codec, encoder in SUBTITLE_CODECS.items():
        path = folder / f"{codec}.{'mp4' if codec == 'mov_text' else 'mkv'}"
        ffmpeg("-i", str(folder / "in.srt"), "-c:s", encoder, str(path))
        files[codec] = ("subtitle", path)
    return files


def ffmpeg_holds(muxer: str, codec: str, kind: str, path: Path, files: dict, folder: Path) -> bool:
    """Whether the ffmpeg binary writes a stream-copy of `codec` into `muxer`
    and it reads back as that codec, without the warning that MPEG-TS gives
    codecs it stores as unreadable private data. A subtitle goes in beside a
    video stream the container holds (a file of subtitles alone is no video)."""
    companion = {"webm": "vp9", "gif": "gif"}.get(muxer, "h264")
    extra = ["-i", str(files[companion][1]), "-map", "0", "-map", "1"] if kind == "subtitle" else []
    target = folder / f"{codec}.{README_CONTAINERS[muxer]}"
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "warning", "-i", str(path),
                             *extra, "-c", "copy", "-f", muxer, str(target)], capture_output=True, text=True)
    if result.returncode != 0 or "private data" in result.stderr:
        return False
    with av.open(str(target)) as container:
        names = {s.codec_context.codec.canonical_name for s in container.streams if s.codec_context}
    return codec in names or (codec == "mp2" and "mp3" in names)  # one decoder reads both


@pytest.mark.parametrize("muxer", README_CONTAINERS)
def test_what_a_container_holds_is_what_ffmpeg_writes(muxer, one_stream_files, tmp_path):
    """`.ts` refused H.264 and AAC, which ffmpeg writes to MPEG-TS fine. The
    answer must be ffmpeg's, except where stvsr avoids a codec on purpose
    (`_AVOID`: PCM in MP4, which few players read)."""
    from stvsr_cli.encode import _AVOID, _muxer_holds

    wrong = []
    for codec, (kind, path) in one_stream_files.items():
        expected = ffmpeg_holds(muxer, codec, kind, path, one_stream_files, tmp_path)
        expected = expected and not codec.startswith(_AVOID.get(muxer, ()))
        if _muxer_holds(muxer, codec) != expected:
            wrong.append(f"{codec}: stvsr says {not expected}, ffmpeg {expected}")
    assert not wrong, wrong


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
