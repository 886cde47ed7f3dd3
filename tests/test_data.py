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
from stvsr_cli.frames import read_frame

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
    crossing = [start for start in range(8) if source.septuplet(start, 36, rng) is None]
    assert crossing == [0, 1, 2, 3, 4]  # windows holding frames 4 and 5
    window = source.septuplet(6, 36, rng)  # the crop is the whole height: compare whole columns
    expected = torch.from_numpy(np.stack(decoded[6:13])).permute(0, 3, 1, 2).float() / 255
    assert any(torch.equal(window, expected[..., left : left + 36]) for left in range(5))


def test_a_photo_becomes_a_smooth_camera_move(tmp_path):
    photo = torch.rand(3, 90, 120)
    frames = camera_move(photo, 32, torch.Generator().manual_seed(1))
    assert frames.shape == (7, 3, 32, 32) and 0 <= frames.min() and frames.max() <= 1
    assert torch.equal(frames, camera_move(photo, 32, torch.Generator().manual_seed(1)))
    assert not torch.equal(frames[0], frames[6])


def test_objects_move_over_a_moving_background_and_cover_it(tmp_path):
    """`objects:` scenes: each photo is the background of several scenes;
    a scene is a function of its index and seed, and its objects move on
    their own, so the frames differ by more than the camera move does."""
    stills = make_layout("stills", tmp_path)
    source = open_source(f"objects:{stills}", 32)
    assert source.kind == "objects" and len(source) == 2 * source.scenes_per_photo
    samples = TrainingSet([source], crop=8, seed=0)
    lr, hr = samples[3]
    assert lr.shape == (4, 3, 8, 8) and hr.shape == (7, 3, 32, 32)
    assert all(torch.equal(a, b) for a, b in zip(samples.sample(3), samples.sample(3)))
    scene = source.septuplet(0, 32, torch.Generator().manual_seed(2))
    background = camera_move(read_frame(source.images[0]).float().div(255), 32, torch.Generator().manual_seed(2))
    covered = (scene - background).abs().amax(dim=1) > 0.02  # (7, 32, 32): where an object is
    assert covered.any()  # an object, over the camera's move of the background photo
    assert len({tuple(frame.nonzero().float().mean(0).tolist()) for frame in covered if frame.any()}) > 1  # moving
    assert validation_set([f"objects:{stills}"], size=32, limit=4)[0].shape == (7, 3, 32, 32)
    with pytest.raises(StvsrError, match="at least 2 photos"):
        single = tmp_path / "one"
        single.mkdir()
        (stills / "photo_a.jpg").rename(single / "photo_a.jpg")
        open_source(f"objects:{single}", 32)


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
