"""The progress bar's rate and ETA: measured, never guessed."""

import pytest

from stvsr_cli.progress import Throughput


def bursts(throughput: Throughput, start: float, period: float, count: int, frames: int = 4, done: int = 0) -> int:
    """`count` windows, one every `period` seconds, each handing over
    `frames` frames within a millisecond, as the upscale pipeline does."""
    for window in range(1, count + 1):
        for frame in range(frames):
            done += 1
            throughput.mark(start + window * period + frame * 1e-4, done)
    return done


def test_no_rate_or_eta_before_the_first_frames():
    throughput = Throughput()
    throughput.start(0.0)
    assert throughput.rate is None and throughput.seconds_left(400, 3.0) is None


def test_the_first_window_does_not_read_as_a_burst_of_speed():
    """Right after the first window the bar showed 128 to 155 fps and ETA
    0:00:01 with 80 to 199 s left: the rate of handing over 4 frames."""
    throughput = Throughput()
    throughput.start(0.0)
    done = bursts(throughput, 0.0, period=5.0, count=1)  # 4 frames, 5 s after the start
    assert throughput.rate == pytest.approx(0.8, rel=1e-3)
    assert throughput.seconds_left(400, 5.0) == pytest.approx((400 - done) / 0.8, rel=1e-3)


def test_the_rate_follows_recent_throughput():
    throughput = Throughput(span=30.0)
    throughput.start(0.0)
    done = bursts(throughput, 0.0, period=5.0, count=20)  # 0.8 fps for 100 s
    assert throughput.rate == pytest.approx(0.8, rel=0.01)
    bursts(throughput, 100.0, period=2.0, count=30, done=done)  # then 2 fps for 60 s
    assert throughput.rate == pytest.approx(2.0, rel=0.05)


def test_the_eta_counts_down_between_windows():
    throughput = Throughput()
    throughput.start(0.0)
    bursts(throughput, 0.0, period=5.0, count=2)
    at_burst = throughput.seconds_left(100, 10.0)
    assert throughput.seconds_left(100, 12.0) == pytest.approx(at_burst - 2.0)
    assert throughput.seconds_left(100, 1e6) == 0.0
