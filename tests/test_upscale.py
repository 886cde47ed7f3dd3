"""`stvsr upscale` end to end: generated videos, the tiny preset, the CPU."""

import os
import re
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stvsr_cli import MEGAN, PRESETS, save_weights
from stvsr_cli.cli import main
from stvsr_cli.inference import Upscaler
from stvsr_cli.upscale import UpscaleOptions, upscale_video
from stvsr_cli.weights import default_weights_path, weights_metadata
from videos import make_video, read_video, stream_durations



def upscale(runner_args: list[str], weights: Path) -> tuple[int, str]:
    if "--weights" not in runner_args:
        runner_args = [*runner_args, "--weights", str(weights)]
    result = CliRunner().invoke(main, ["upscale", *runner_args, "--device", "cpu"])
    return result.exit_code, result.output


def leftovers(directory: Path, expected: set[str]) -> set[str]:
    return {p.name for p in directory.iterdir()} - expected


@pytest.mark.parametrize("frames", [1, 2, 3, 4, 7])
def test_n_frames_give_2n_frames_at_twice_the_rate_and_4x_the_size(tmp_path, weights, frames):
    source = make_video(tmp_path / "in.mp4", frames=frames, width=40, height=24, fps=Fraction(30000, 1001))
    code, output = upscale([str(source), str(tmp_path / "out.mp4"), "--quiet"], weights)
    assert code == 0, output
    video, fps = read_video(tmp_path / "out.mp4")
    assert len(video) == 2 * frames
    assert fps == Fraction(60000, 1001)
    assert video[0].shape == (96, 160, 3)


def test_audio_is_kept_in_sync_and_odd_sizes_work(tmp_path, weights):
    source = make_video(tmp_path / "in.mkv", frames=9, width=37, height=21, fps=25, audio=True)
    code, output = upscale([str(source), str(tmp_path / "out.mkv")], weights)
    assert code == 0, output
    assert output.startswith("Wrote") and "18 frames of 148x84 at 50 fps" in output  # no blank line before it
    seconds, rate = re.search(r"in ([\d.]+) s \(([\d.]+) frames a second\)", output).groups()
    seconds, rate = float(seconds), float(rate)  # the true average over the whole run, as rounded for print
    assert 18 / (seconds + 0.05) - 0.005 <= rate <= 18 / (seconds - 0.05) + 0.005
    durations = stream_durations(tmp_path / "out.mkv")
    source_durations = stream_durations(source)
    assert abs(durations["video"] - source_durations["video"]) <= 1 / 50 + 1e-6
    assert abs(durations["audio"] - source_durations["audio"]) <= 1 / 50 + 1e-6
    video, _ = read_video(tmp_path / "out.mkv")
    assert video[0].shape == (84, 148, 3)


def test_no_audio_drops_the_audio(tmp_path, weights):
    source = make_video(tmp_path / "in.mp4", frames=4, audio=True)
    code, output = upscale([str(source), str(tmp_path / "out.mp4"), "--no-audio", "-q"], weights)
    assert code == 0, output
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert not container.streams.audio


def test_the_frame_at_a_scene_cut_repeats_the_last_frame_instead_of_blending(tmp_path, weights):
    source = make_video(tmp_path / "in.mp4", frames=10, width=48, height=32, cut_at=5)
    for threshold, name in (("0.15", "cut"), ("0", "blend")):
        code, output = upscale([str(source), str(tmp_path / name) + "/", "--scene-threshold", threshold, "-q"], weights)
        assert code == 0, output
    cut = sorted((tmp_path / "cut").glob("*.png"))
    assert len(cut) == 20
    frames = [read_png(p) for p in cut]
    # Output 9 lies between input 4 (last of the first shot) and input 5: it repeats output 8.
    assert torch.equal(frames[9], frames[8])
    blended = [read_png(p) for p in sorted((tmp_path / "blend").glob("*.png"))]
    assert not torch.equal(blended[9], blended[8])
    # Away from the cut, nothing repeats.
    assert not torch.equal(frames[3], frames[2])


def read_png(path: Path) -> torch.Tensor:
    with av.open(str(path)) as container:
        return torch.from_numpy(next(container.decode(video=0)).to_ndarray(format="rgb24"))


def test_tiled_and_batched_runs_match_the_plain_run_closely(tmp_path, weights):
    source = make_video(tmp_path / "in.mp4", frames=6, width=64, height=40)
    upscale([str(source), str(tmp_path / "plain") + "/", "--tile", "0", "-q"], weights)
    upscale([str(source), str(tmp_path / "tiled") + "/", "--tile", "40", "--batch", "3", "-q"], weights)
    plain = torch.stack([read_png(p) for p in sorted((tmp_path / "plain").glob("*.png"))]).float()
    tiled = torch.stack([read_png(p) for p in sorted((tmp_path / "tiled").glob("*.png"))]).float()
    assert plain.shape == tiled.shape == (12, 160, 256, 3)
    assert (plain - tiled).abs().mean() < 2


def test_self_ensemble_gives_frames_close_to_the_plain_runs_but_not_the_same(tmp_path, weights):
    source = make_video(tmp_path / "in.mp4", frames=4, width=28, height=20)
    upscale([str(source), str(tmp_path / "plain") + "/", "-q"], weights)
    code, output = upscale([str(source), str(tmp_path / "ensemble") + "/", "--self-ensemble", "-q"], weights)
    assert code == 0, output
    plain = torch.stack([read_png(p) for p in sorted((tmp_path / "plain").glob("*.png"))]).float()
    ensemble = torch.stack([read_png(p) for p in sorted((tmp_path / "ensemble").glob("*.png"))]).float()
    assert plain.shape == ensemble.shape == (8, 80, 112, 3)
    assert 0 < (plain - ensemble).abs().mean() < 8


@pytest.mark.parametrize("batch", [2, 4])
def test_large_batches_give_the_same_frames_as_one_window_at_a_time(tmp_path, weights, batch):
    source = make_video(tmp_path / "in.mp4", frames=14, width=32, height=24, cut_at=9)
    upscale([str(source), str(tmp_path / "one") + "/", "--tile", "0", "-q"], weights)
    code, output = upscale([str(source), str(tmp_path / "many") + "/", "--tile", "0", "--batch", str(batch), "-q"], weights)
    assert code == 0, output
    one = torch.stack([read_png(p) for p in sorted((tmp_path / "one").glob("*.png"))]).float()
    many = torch.stack([read_png(p) for p in sorted((tmp_path / "many").glob("*.png"))]).float()
    assert one.shape == many.shape == (28, 96, 128, 3)
    assert (one - many).abs().max() <= 1  # batched convolutions may round differently


def test_the_library_call_reports_what_it_did(tmp_path, weights):
    source = make_video(tmp_path / "in.mp4", frames=5, cut_at=3)
    seen = []
    result = upscale_video(source, tmp_path / "out.mp4", UpscaleOptions(weights=weights, device="cpu"),
                           progress=lambda done, total: seen.append((done, total)))
    assert (result.input_frames, result.output_frames, result.scene_cuts) == (5, 10, 1)
    assert result.output_size == (192, 128) and result.output_fps == 48
    assert seen[-1] == (10, 10)


def test_what_the_encoder_settings_change_is_said_once(tmp_path, weights):
    """A 10-bit source into VP8, which has only 8 bits: one warning, although
    the settings are resolved for the encoder trial and for the real run."""
    source = make_video(tmp_path / "in.mkv", frames=2, pix_fmt="yuv420p10le")
    code, output = upscale([str(source), str(tmp_path / "out.webm"), "--codec", "libvpx", "-q"], weights)
    assert code == 0, output
    assert output == "stvsr: warning: libvpx cannot encode more than 8 bits; writing 8-bit yuv420p\n"


def test_the_shipped_weights_are_trained_small_weights_and_run(tmp_path):
    metadata = weights_metadata(default_weights_path())
    assert (metadata["preset"], metadata["trained"]) == ("small", "yes")
    source = make_video(tmp_path / "in.mp4", frames=2)
    result = CliRunner().invoke(main, ["upscale", str(source), str(tmp_path / "out.mp4"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "placeholder" not in result.output


def test_untrained_weights_say_they_are_a_placeholder(tmp_path):
    weights = tmp_path / "untrained.safetensors"
    save_weights(MEGAN(PRESETS["tiny"]), weights, trained=False)
    source = make_video(tmp_path / "in.mp4", frames=2)
    result = CliRunner().invoke(
        main, ["upscale", str(source), str(tmp_path / "out.mp4"), "--device", "cpu", "--weights", str(weights)]
    )
    assert result.exit_code == 0, result.output
    assert "untrained placeholder" in result.output


# --- failures: one line, non-zero exit, nothing left behind -------------------------------------------


def bad(tmp_path: Path, weights: Path, args: list[str]) -> str:
    before = {p.name for p in tmp_path.iterdir()}
    code, output = upscale(args, weights)
    assert code == 1, output
    lines = output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("stvsr: error: "), repr(output)  # no blank line before it
    assert "Traceback" not in output
    assert leftovers(tmp_path, before) == set(), "a failed run left files behind"
    return lines[0]


def test_bad_inputs_get_one_clear_line(tmp_path, weights):
    video = make_video(tmp_path / "in.mp4", frames=3)
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n")
    wav = tmp_path / "tone.wav"
    with av.open(str(wav), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(make_video(tmp_path / "whole.mp4", frames=12).read_bytes()[:3000])
    (tmp_path / "whole.mp4").unlink()
    out = str(tmp_path / "out.mp4")

    assert "no such file" in bad(tmp_path, weights, [str(tmp_path / "missing.mp4"), out])
    bad(tmp_path, weights, [str(text), out])
    assert "no video" in bad(tmp_path, weights, [str(wav), out])
    bad(tmp_path, weights, [str(truncated), out])
    bad(tmp_path, weights, [str(video), str(video)])
    assert "exists" in bad(tmp_path, weights, [str(video), str(text)])
    bad(tmp_path, weights, [str(video), str(tmp_path / "no" / "such" / "dir" / "out.mp4")])
    bad(tmp_path, weights, [str(video), out, "--codec", "nosuchcodec"])
    assert "does not exist" in bad(tmp_path, weights, [str(video), out, "--weights", str(tmp_path / "none.safetensors")])
    assert "not a stvsr weights file" in bad(tmp_path, weights, [str(video), out, "--weights", str(text)])
    assert "stvsr weights" in bad(tmp_path, weights, [str(video), out, "--weights", str(video)])


def test_an_existing_output_is_replaced_only_with_overwrite(tmp_path, weights):
    video = make_video(tmp_path / "in.mp4", frames=2)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"precious")
    assert "--overwrite" in bad(tmp_path, weights, [str(video), str(out)])
    assert out.read_bytes() == b"precious"
    code, output = upscale([str(video), str(out), "--overwrite", "-q"], weights)
    assert code == 0, output
    assert len(read_video(out)[0]) == 4


def test_an_unwritable_output_directory_is_refused(tmp_path, weights):
    import os

    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    video = make_video(tmp_path / "in.mp4", frames=2)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert "writable" in bad(tmp_path, weights, [str(video), str(locked / "out.mp4")])


def test_an_output_under_a_file_is_refused(tmp_path, weights):
    video = make_video(tmp_path / "in.mp4", frames=2)
    bad(tmp_path, weights, [str(video), str(video / "out.mp4")])


@pytest.mark.parametrize("failure", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_failure_midway_leaves_no_output(tmp_path, weights, monkeypatch, failure):
    video = make_video(tmp_path / "in.mp4", frames=12, audio=True)
    calls = []
    real = Upscaler.__call__

    def failing(self, frames):
        calls.append(1)
        if len(calls) == 3:
            raise failure
        return real(self, frames)

    monkeypatch.setattr(Upscaler, "__call__", failing)
    before = {p.name for p in tmp_path.iterdir()}
    code, output = upscale([str(video), str(tmp_path / "out.mp4")], weights)  # with the progress bar running
    assert code == (130 if isinstance(failure, KeyboardInterrupt) else 1)
    assert output in ("stvsr: interrupted\n", "stvsr: unexpected RuntimeError: boom. Run again with `stvsr --debug "
                      "...` for the traceback and report it.\n"), repr(output)
    assert leftovers(tmp_path, before) == set()


def test_a_hardware_encoder_that_cannot_run_fails_before_any_decoding(tmp_path, weights, monkeypatch):
    if os.path.exists("/dev/nvidia0"):
        pytest.skip("NVENC may work on a machine with an NVIDIA GPU")
    video = make_video(tmp_path / "in.mp4", frames=4)
    decoded = []
    monkeypatch.setattr("stvsr_cli.upscale.decode", lambda info: decoded.append(info) or iter(()))
    line = bad(tmp_path, weights, [str(video), str(tmp_path / "out.mp4"), "--codec", "h264_nvenc"])
    assert line.startswith("stvsr: error: h264_nvenc cannot encode out.mp4 here: ") and "GPU" in line
    assert decoded == []


# --- memory ------------------------------------------------------------------------------------------


def test_a_run_that_would_not_fit_in_memory_is_refused_up_front(tmp_path, weights, monkeypatch):
    video = make_video(tmp_path / "in.mp4", frames=4, width=48, height=32)
    monkeypatch.setattr("stvsr_cli.upscale.available_memory", lambda device: 120 << 20)
    line = bad(tmp_path, weights, [str(video), str(tmp_path / "out.mp4"), "--batch", "4"])
    needed = re.fullmatch(r"stvsr: error: upscaling 48x32 frames to 192x128 needs about (\d+) MB of memory "
                          r"\(.+\), and 120 MB is free; (.+)", line)
    assert needed and int(needed.group(1)) > 120, line
    assert needed.group(2) == "use --batch 1, or scale the input down first", line
    monkeypatch.setattr("stvsr_cli.upscale.available_memory", lambda device: 20 << 20)
    assert bad(tmp_path, weights, [str(video), str(tmp_path / "out.mp4")]).endswith(
        "run it on a machine with more memory")


def test_the_memory_plan_counts_what_grows_with_the_frame(weights):
    """An 8000x8000 frame allocated gigabytes and then failed with 'can't
    allocate memory ... report it': the window outputs and the encoder grow
    with the frame, which tiles do not bound."""
    from stvsr_cli.decode import ColorInfo, VideoInfo
    from stvsr_cli.upscale import memory_plan

    def info(width: int, height: int) -> VideoInfo:
        return VideoInfo(path=Path("in.mp4"), container="mp4", width=width, height=height, fps=Fraction(25),
                         frame_count=1, duration=0.04, start_time=0.0, pix_fmt="yuv420p", bit_depth=8,
                         color=ColorInfo("bt709", "tv", None, None, False), rotation=0, audio_codecs=(),
                         subtitle_codecs=())

    upscaler = Upscaler(MEGAN(PRESETS["small"]), device="cpu")
    small, huge = (memory_plan(info(w, h), upscaler, UpscaleOptions()).host for w, h in ((640, 360), (8000, 8000)))
    assert 1 << 30 < sum(small.values()) < 8 << 30  # 640x360: a few GB (2.7 when measured)
    assert sum(huge.values()) > 200 << 30
    outputs = next(size for name, size in huge.items() if name.startswith("window outputs"))
    assert outputs == 2 * 7 * 3 * 4 * 32000 * 32000  # two windows of 7 float32 frames of 32000x32000
    assert huge["the network"] == small["the network"]  # tiles bound the network itself
    assert huge["decoded frames"] > 1 << 30 and huge["finished frames"] > 1 << 30
    ensemble = Upscaler(MEGAN(PRESETS["small"]), device="cpu", self_ensemble=True)
    with_ensemble = memory_plan(info(8000, 8000), ensemble, UpscaleOptions(self_ensemble=True)).host
    # the sum so far and a pass turned back, beside the pass itself: two windows' outputs more
    assert sum(with_ensemble.values()) - sum(huge.values()) == 2 * 7 * 3 * 4 * 32000 * 32000


# --- stopped from outside -----------------------------------------------------------------------------

ROOT = Path(__file__).parent.parent


def start_upscale(tmp_path: Path, weights: Path, output: Path, *, frames: int = 240) -> subprocess.Popen:
    """`stvsr upscale` in a process of its own session (as `timeout` runs
    it), once its encoder has started writing into the staging folder."""
    source = make_video(tmp_path / "in.mp4", frames=frames, width=64, height=48, audio=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "stvsr_cli", "upscale", str(source), str(output), "--weights", str(weights),
         "--device", "cpu", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )
    deadline = time.monotonic() + 120
    # The segment being encoded is staged inside the run's work folder.
    while not any(p.is_file() and p.stat().st_size
                  for p in output.parent.glob(f".{output.name}.stvsr.work/.seg-*.stvsr-*/*")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the encoder never started"
        time.sleep(0.02)
    return process


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("name, whole_group", [("SIGTERM", True), ("SIGHUP", False)])
def test_sigterm_and_sighup_clean_up_like_ctrl_c(tmp_path, weights, name, whole_group):
    """`timeout` and `docker stop` send SIGTERM (timeout to the whole process
    group, ffmpeg included), a closing terminal SIGHUP: the staging folder,
    with its playable partial video, used to stay behind without a word."""
    output = tmp_path / "out.mp4"
    process = start_upscale(tmp_path, weights, output)
    signum = getattr(signal, name)
    (os.killpg if whole_group else os.kill)(process.pid, signum)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stderr
    assert stderr == f"stvsr: stopped by {name}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals and flock")
def test_after_kill_9_the_next_run_into_the_same_output_removes_the_leftovers(tmp_path, weights):
    output = tmp_path / "out.mp4"
    process = start_upscale(tmp_path, weights, output)
    process.kill()  # SIGKILL: nothing can clean up
    process.communicate(timeout=60)
    (work,) = tmp_path.glob(".out.mp4.stvsr.work")  # no segment was finished: nothing to resume
    short = make_video(tmp_path / "short.mp4", frames=2)
    code, text = upscale([str(short), str(output), "-q"], weights)
    assert code == 0, text
    assert f"removed {work}, the unfinished work of an earlier run into out.mp4 that was killed" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4", "short.mp4"]
    assert len(read_video(output)[0]) == 4
