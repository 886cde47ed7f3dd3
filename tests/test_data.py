"""Training data: layout detection, video windows and scene cuts, synthetic camera motion, samples."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stvsr_cli import StvsrError
from stvsr_cli.data import TrainingSet, VideoSource, camera_move, open_source, validation_set
from stvsr_cli.decode import decode, probe

sys.path.insert(0, str(Path(__file__).parent))
from datasets import make_layout, write_frames  # noqa: E402
from videos import make_video  # noqa: E402


@pytest.mark.parametrize("kind", ["clips", "vimeo", "videos", "stills"])
def test_each_layout_gives_lr_and_hr_windows(kind, tmp_path):
    samples = TrainingSet([open_source(make_layout(kind, tmp_path), 32)], crop=8, seed=0)
    assert samples.sources[0].kind == kind
    lr, hr = samples[5]
    assert lr.shape == (4, 3, 8, 8) and hr.shape == (7, 3, 32, 32)
    first, again = samples.sample(5), samples.sample(5)  # a sample is a function of (seed, index)
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_video_windows_are_found_by_seeking_and_never_cross_a_scene_cut(tmp_path):
    path = make_video(tmp_path / "cut.mp4", frames=14, width=40, height=36, cut_at=5)
    decoded = list(decode(probe(path)))  # the frames `stvsr upscale` reads, in the video's own colours
    source = open_source(path, 32)
    assert isinstance(source, VideoSource) and len(source) == 8
    rng = torch.Generator()
    crossing = [start for start in range(8) if source.window(start, 36, rng) is None]
    assert crossing == [0, 1, 2, 3, 4]  # windows holding frames 4 and 5
    window = source.window(6, 36, rng)  # the crop is the whole height: compare whole columns
    expected = torch.from_numpy(np.stack(decoded[6:13])).permute(0, 3, 1, 2).float() / 255
    assert any(torch.equal(window, expected[..., left : left + 36]) for left in range(5))


def test_a_photo_becomes_a_smooth_camera_move(tmp_path):
    photo = torch.rand(3, 90, 120)
    frames = camera_move(photo, 32, torch.Generator().manual_seed(1))
    assert frames.shape == (7, 3, 32, 32) and 0 <= frames.min() and frames.max() <= 1
    assert torch.equal(frames, camera_move(photo, 32, torch.Generator().manual_seed(1)))
    assert not torch.equal(frames[0], frames[6])


def test_layouts_are_detected_and_can_be_named(tmp_path):
    single = write_frames(tmp_path / "calendar", 8)  # one clip's folder: numbered frames
    assert open_source(single, 32).kind == "clips"
    assert open_source(f"stills:{single}", 32).kind == "stills"
    make_layout("stills", tmp_path / "holder")  # a folder holding a folder of photos is not a folder of clips
    (tmp_path / "empty").mkdir()
    for folder in ("empty", "holder"):
        with pytest.raises(StvsrError, match="no known layout"):
            open_source(tmp_path / folder, 32)
    with pytest.raises(StvsrError, match="smaller than the 64x64 HR crop"):
        open_source(single, 64)


def test_validation_uses_non_overlapping_windows_without_cuts_up_to_a_limit(tmp_path):
    video = make_video(tmp_path / "cut.mp4", frames=21, width=40, height=36, cut_at=5)
    windows = validation_set([video], size=32, limit=10)  # windows at frames 0, 7, 14; the first crosses the cut
    assert len(windows) == 2
    assert all(w.shape == (7, 3, 32, 32) and w.dtype == torch.uint8 for w in windows)
    assert len(validation_set([video, make_layout("stills", tmp_path)], size=32, limit=2)) <= 2
