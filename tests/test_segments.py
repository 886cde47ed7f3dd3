"""Long videos and many videos: parts (--start, --duration), segments and
--resume, batches, torchrun, and the encoder options that reach ffmpeg."""

import json
import os
import shutil
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from stvsr_cli.cli import main
from stvsr_cli.encode import EncodeOptions, default_pix_fmt, double_rate_timecode, video_command
from stvsr_cli.errors import StvsrError
from stvsr_cli.segments import frame_range, parse_time, plan_segments
from test_encode import OUT_FPS, source_info
from videos import make_video, read_video, stream_durations

ROOT = Path(__file__).parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}


def upscale(args: list[str], weights: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["upscale", *args, "--weights", str(weights), "--device", "cpu", "--tile", "0"])
    return result.exit_code, result.output


def pngs(folder: Path) -> list[np.ndarray]:
    return [np.asarray(av.open(str(p)).decode(video=0).__next__().to_ndarray(format="rgb24"))
            for p in sorted(folder.glob("*.png"))]


def test_times_and_frame_ranges_read_as_ffmpeg_reads_them():
    assert parse_time("90", "--start") == 90
    assert parse_time("1:30", "--start") == 90
    assert parse_time("01:02:03.5", "--start") == 3723.5
    with pytest.raises(StvsrError, match="not a time"):
        parse_time("1m30", "--start")
    # -ss 0.4 -t 0.5 at 25 fps keeps the frames at 0.40 .. 0.88 s: 10 to 22.
    assert frame_range(Fraction(25), 0.4, 0.5) == (10, 23)
    assert frame_range(Fraction(25), 0.41, end=1.0) == (11, 25)
    assert frame_range(Fraction(30000, 1001), 0) == (0, None)
    with pytest.raises(StvsrError, match="no frame"):
        frame_range(Fraction(25), 1.01, 0.02)  # between frames 25 and 26
    # A part's timecode starts at its first frame: frame 12 at 25 fps is frame 24 at 50, 10 frames later 44.
    assert double_rate_timecode("01:00:00:12", Fraction(25), skip=2 * 10) == "01:00:00:44"
    segments = plan_segments(10, None, 31, 8)  # the last one runs to the real end, whatever it is
    assert [(s.first, s.end) for s in segments] == [(10, 18), (18, 26), (26, None)]
    with pytest.raises(StvsrError, match="--start"):
        plan_segments(40, None, 31, 8)


def test_a_part_has_the_same_frames_as_the_whole_run_and_its_audio_is_cut_to_match(tmp_path, weights):
    video = make_video(tmp_path / "in.mp4", frames=14, fps=25, audio=True, cut_at=9)
    code, text = upscale([str(video), str(tmp_path / "whole") + "/", "-q"], weights)
    assert code == 0, text
    code, text = upscale([str(video), str(tmp_path / "part") + "/", "--start", "0.2", "--duration", "0.36",
                          "--segment", "0.16", "-q"], weights)  # in 3 segments
    assert code == 0, text
    whole, part = pngs(tmp_path / "whole"), pngs(tmp_path / "part")
    assert len(whole) == 28 and len(part) == 18  # source frames 5 .. 13, across the scene cut
    assert all(np.array_equal(a, b) for a, b in zip(part, whole[10:28]))
    # As a video, with the audio cut to the same 0.36 s.
    code, text = upscale([str(video), str(tmp_path / "part.mp4"), "--start", "0:00.2", "--end", "0.56", "-q"], weights)
    assert code == 0, text
    durations = stream_durations(tmp_path / "part.mp4")
    assert len(read_video(tmp_path / "part.mp4")[0]) == 18
    assert durations["video"] == pytest.approx(0.36, abs=0.021)
    assert durations["audio"] == pytest.approx(0.36, abs=0.03)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "part", "part.mp4", "whole"]


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stvsr_cli", "upscale", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_kill_9_then_resume_gives_the_video_of_an_unbroken_run(tmp_path, weights):
    video = make_video(tmp_path / "in.mp4", frames=24, audio=True, cut_at=10)
    args = ["--weights", str(weights), "--device", "cpu", "--tile", "0", "--segment", "0.125", "-q"]
    output = tmp_path / "out.mp4"
    work = tmp_path / ".out.mp4.stvsr.work"
    process = start([str(video), str(output), *args])
    deadline = time.monotonic() + 120
    while not list(work.glob("seg-*.json")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no segment was ever finished"
        time.sleep(0.01)
    process.kill()  # SIGKILL: no clean-up at all
    process.communicate(timeout=60)
    assert not output.exists()
    done = len(list(work.glob("seg-*.json")))
    assert 1 <= done < 8  # of 8 segments of 3 frames

    # Run again without --resume: refused in one line, nothing lost.
    code, text = upscale([str(video), str(output), "--segment", "0.125", "-q"], weights)
    assert code == 1 and text.count("\n") == 1 and "--resume" in text, text
    # --resume with other settings: refused in one line.
    code, text = upscale([str(video), str(output), "--segment", "0.125", "--crf", "20", "--resume", "-q"], weights)
    assert code == 1 and text.count("\n") == 1 and "encode.crf was 18, now 20" in text, text
    code, text = upscale([str(video), str(output), "--segment", "0.125", "--self-ensemble", "--resume", "-q"], weights)
    assert code == 1 and text.count("\n") == 1 and "network was" in text and "self-ensemble" in text, text
    assert len(list(work.glob("seg-*.json"))) >= done

    code, text = upscale([str(video), str(output), "--segment", "0.125", "--resume"], weights)
    assert code == 0, text
    assert f"{done} of 8 segments were done before --resume" in text
    assert not work.exists()
    code, text = upscale([str(video), str(tmp_path / "unbroken.mp4"), "--segment", "0.125", "-q"], weights)
    assert code == 0, text
    resumed, unbroken = read_video(output)[0], read_video(tmp_path / "unbroken.mp4")[0]
    assert len(resumed) == len(unbroken) == 48
    assert all(np.array_equal(a, b) for a, b in zip(resumed, unbroken))
    assert stream_durations(output)["audio"] == pytest.approx(1.0, abs=0.03)


def test_a_batch_with_a_bad_file_finishes_the_others_and_exits_non_zero(tmp_path, weights):
    inputs = tmp_path / "in"
    inputs.mkdir()
    make_video(inputs / "a.mp4", frames=4, audio=True)
    (inputs / "b.mp4").write_text("not a video")
    make_video(tmp_path / "c.mkv", frames=3)
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(inputs / "a.mp4", out / "c.mov")  # an output that is already there is skipped
    code, text = upscale([str(inputs), str(tmp_path / "c.mkv"), str(out), "--format", "mov",
                          "--json", str(tmp_path / "r.json")], weights)
    assert code == 1
    assert text.strip().splitlines()[-1].startswith("stvsr: error: 1 of 3 inputs failed; the first: ")
    results = json.loads((tmp_path / "r.json").read_text())
    assert [(r["input"], r["status"]) for r in results] == [
        (str(inputs / "a.mp4"), "done"), (str(inputs / "b.mp4"), "failed"), (str(tmp_path / "c.mkv"), "skipped")]
    assert results[0]["output_frames"] == 8 and results[0]["output_fps"] == 48
    assert "cannot read" in results[1]["error"]
    assert sorted(p.name for p in out.iterdir()) == ["a.mov", "c.mov"]
    assert len(read_video(out / "a.mov")[0]) == 8
    # One input with --json: the same record.
    code, text = upscale([str(inputs / "a.mp4"), str(tmp_path / "one.mkv"), "--json", str(tmp_path / "1.json"), "-q"],
                         weights)
    assert code == 0, text
    (record,) = json.loads((tmp_path / "1.json").read_text())
    assert record["status"] == "done" and record["output_frames"] == 8


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="no torchrun")
def test_torchrun_with_two_processes_gives_the_video_of_one(tmp_path, weights):
    video = make_video(tmp_path / "in.mp4", frames=16, audio=True, cut_at=7)
    args = ["--weights", str(weights), "--device", "cpu", "--tile", "0", "--segment", "0.25", "-q"]
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    result = subprocess.run([torchrun, "--nproc_per_node", "2", "-m", "stvsr_cli", "upscale", str(video),
                             str(tmp_path / "two.mp4"), *args], capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr
    code, text = upscale([str(video), str(tmp_path / "one.mp4"), "--segment", "0.25", "-q"], weights)
    assert code == 0, text
    two, one = read_video(tmp_path / "two.mp4")[0], read_video(tmp_path / "one.mp4")[0]
    assert len(two) == len(one) == 32
    assert all(np.array_equal(a, b) for a, b in zip(two, one))
    assert stream_durations(tmp_path / "two.mp4")["audio"] == pytest.approx(16 / 24, abs=0.03)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "one.mp4", "two.mp4"]


def test_encoder_options_reach_ffmpeg(tmp_path, weights):
    video = make_video(tmp_path / "in.mp4", frames=6)
    code, text = upscale([str(video), str(tmp_path / "out.mp4"), "--encoder-opt", "g=3", "--encoder-opt",
                          "bf=0", "-q"], weights)
    assert code == 0, text
    with av.open(str(tmp_path / "out.mp4")) as container:
        keyframes = [packet.is_keyframe for packet in container.demux(video=0) if packet.size]
    assert keyframes == [True, False, False] * 4  # a keyframe every 3 frames, as -g 3 asks
    code, text = upscale([str(video), str(tmp_path / "bad.mp4"), "--encoder-opt", "nosuch=1"], weights)
    assert code == 1 and text == "stvsr: error: --encoder-opt nosuch=...: libx264 has no option 'nosuch'; " \
                                 "`stvsr encoders libx264` lists its options\n"
    code, text = upscale([str(video), str(tmp_path / "bad.mp4"), "--encoder-opt", "tune=nosuch"], weights)
    assert code == 1 and text.startswith("stvsr: error: libx264 cannot encode bad.mp4 here:"), text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]


def test_crf_and_10_bits_take_each_encoders_own_names(tmp_path):
    """NVENC calls constant quality -cq and 10-bit 4:2:0 p010le; checked on
    the command line, which needs no GPU."""
    source = source_info(make_video(tmp_path / "in.mp4", frames=1), bit_depth=10)
    command = video_command(Path("out.mp4"), source, width=64, height=48, fps=OUT_FPS,
                            options=EncodeOptions(codec="h264_nvenc", crf=23, extra=(("rc", "vbr"),)))
    assert command[command.index("-cq") + 1] == "23" and "-crf" not in command
    assert command[command.index("-b:v") + 1] == "0" and command[command.index("-rc") + 1] == "vbr"
    assert command[command.index("-pix_fmt") + 1] == "p010le"
    assert default_pix_fmt("hevc_nvenc", 10) == "p010le"
    assert default_pix_fmt("libx264", 10) == "yuv420p10le"
    assert default_pix_fmt("h264_nvenc", 8) == "yuv420p"
