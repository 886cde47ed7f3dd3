"""Metrics agree with the field's references; frame folders and the LR rule."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from stvsr_cli import frames, metrics


def _frames(seed: int, size=(3, 40, 52)):
    generator = torch.Generator().manual_seed(seed)
    clean = torch.rand(size, generator=generator)
    # A smooth image plus noise: SSIM in a realistic mid range, not near 0 or 1.
    smooth = torch.nn.functional.avg_pool2d(clean[None], 5, 1, 2)[0]
    noisy = (smooth + 0.05 * torch.randn(size, generator=generator)).clamp(0, 1)
    return metrics.quantize(noisy), metrics.quantize(smooth)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssim_y_matches_scikit_image(seed):
    pred, target = _frames(seed)
    ours = metrics.ssim_y(pred, target)
    reference = structural_similarity(
        metrics.rgb_to_y(pred).numpy(), metrics.rgb_to_y(target).numpy(),
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
    )
    assert 0.2 < reference < 0.99
    assert ours == pytest.approx(reference, abs=1e-4)


def test_ssim_rgb_matches_scikit_image_per_channel_mean():
    pred, target = _frames(3)
    reference = structural_similarity(
        (pred * 255).permute(1, 2, 0).numpy(), (target * 255).permute(1, 2, 0).numpy(),
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=2,
    )
    assert metrics.ssim_rgb(pred, target) == pytest.approx(reference, abs=1e-4)


def test_psnr_y_by_hand():
    target = torch.full((3, 16, 16), 128 / 255)
    pred = target.clone()
    pred[:, 0, 0] = 138 / 255  # one pixel off by 10 levels in every channel
    y_error = 10 * sum(metrics.Y_WEIGHTS) / 255  # Y moves by the weights' sum per unit of RGB
    expected = 10 * math.log10(255**2 / (y_error**2 / 256))
    assert metrics.psnr_y(pred, target) == pytest.approx(expected, abs=1e-6)
    assert metrics.psnr_y(target, target) == math.inf
    assert metrics.ssim_y(target, target) == pytest.approx(1.0)


def test_y_of_white_and_black_is_the_studio_range():
    assert metrics.rgb_to_y(torch.ones(3, 1, 1)).item() == pytest.approx(235, abs=0.01)
    assert metrics.rgb_to_y(torch.zeros(3, 1, 1)).item() == 16


def test_make_lr_keeps_flat_colour_and_quarters_the_size():
    hr = torch.full((2, 3, 32, 48), 0.25)
    lr = frames.make_lr(hr)
    assert lr.shape == (2, 3, 8, 12)
    assert torch.allclose(lr, metrics.quantize(hr[..., :8, :12]))
    with pytest.raises(ValueError):
        frames.make_lr(torch.zeros(3, 30, 48))
    assert frames.crop_to_multiple(torch.zeros(3, 30, 49)).shape == (3, 28, 48)


def test_frame_folder_round_trip_in_natural_order(tmp_path):
    clip = torch.rand(3, 3, 12, 20)
    for index, name in zip(range(3), ["f2.png", "f10.png", "f1.png"]):
        frames.save_frame(clip[index], tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a frame")
    listed = frames.list_frames(tmp_path)
    assert [p.name for p in listed] == ["f1.png", "f2.png", "f10.png"]
    back = frames.read_clip(listed)
    assert back.shape == (3, 3, 12, 20)
    assert torch.allclose(back[1], metrics.quantize(clip[0]))


def test_unreadable_frame_is_a_user_error(tmp_path):
    bad = tmp_path / "00000.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(frames.StvsrError, match="not a readable image"):
        frames.read_frame(bad)


def test_vimeo_list_names_septuplets_and_missing_frames_are_reported(tmp_path):
    for sequence in ["00001/0001", "00001/0002"]:
        (tmp_path / "sequences" / sequence).mkdir(parents=True)
        for index in range(1, 8):
            frames.save_frame(torch.zeros(3, 8, 8), tmp_path / "sequences" / sequence / f"im{index}.png")
    (tmp_path / "sep_testlist.txt").write_text("00001/0001\n00001/0002\n")
    assert frames.is_vimeo_root(tmp_path)
    septuplets = frames.vimeo_septuplets(tmp_path, "sep_testlist.txt")
    assert [len(s) for s in septuplets] == [7, 7]
    assert septuplets[1][6] == tmp_path / "sequences/00001/0002/im7.png"
    (tmp_path / "sequences/00001/0002/im4.png").unlink()
    with pytest.raises(frames.StvsrError, match="im4.png is missing"):
        frames.vimeo_septuplets(tmp_path, "sep_testlist.txt")
    with pytest.raises(frames.StvsrError, match="no sep_trainlist.txt"):
        frames.vimeo_septuplets(tmp_path, "sep_trainlist.txt")
