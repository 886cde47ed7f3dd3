"""Spatial tiling: seamless, exact for a local network, any frame size."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from stvsr_cli import MEGAN, PRESETS, Upscaler
from stvsr_cli.tiling import tile_starts, upscale_tiled


def local_network(windows: torch.Tensor) -> torch.Tensor:
    """A stand-in for MEGAN whose output at a pixel depends only on nearby
    input pixels, like any convolutional network away from tile edges:
    (k, 4, 3, h, w) -> (k, 7, 3, 4h, 4w)."""
    k, n1, c, h, w = windows.shape
    up = F.interpolate(windows.flatten(0, 1), scale_factor=4, mode="nearest").unflatten(0, (k, n1))
    middle = (up[:, :-1] + up[:, 1:]) / 2
    frames = torch.stack([up[:, i // 2] if i % 2 == 0 else middle[:, i // 2] for i in range(2 * n1 - 1)], dim=1)
    return frames


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 500), tile=st.integers(8, 200), overlap=st.integers(0, 7))
def test_tiles_cover_the_frame_and_overlap_enough(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    assert starts[0] == 0 and starts[-1] + size == length
    for a, b in zip(starts, starts[1:]):
        assert a < b and a + size - b >= overlap


@pytest.mark.parametrize("size", [(37, 53), (64, 64), (20, 90)])
@pytest.mark.parametrize("batch", [1, 3])
def test_tiled_output_equals_untiled_for_a_local_network(size, batch):
    windows = torch.rand(2, 4, 3, *size)
    whole = local_network(windows)
    tiled = upscale_tiled(local_network, windows, scale=4, tile=24, overlap=6, batch=batch)
    assert tiled.shape == whole.shape == (2, 7, 3, 4 * size[0], 4 * size[1])
    torch.testing.assert_close(tiled, whole)


def test_tile_zero_or_a_small_frame_runs_in_one_piece():
    calls = []

    def counting(windows):
        calls.append(windows.shape)
        return local_network(windows)

    windows = torch.rand(1, 4, 3, 30, 40)
    upscale_tiled(counting, windows, scale=4, tile=0)
    upscale_tiled(counting, windows, scale=4, tile=64)
    assert calls == [(1, 4, 3, 30, 40)] * 2


def context_network(windows: torch.Tensor) -> torch.Tensor:
    """Like `local_network`, plus a term from the whole tile (as attention
    and large receptive fields give): tiles disagree, so a hard switch
    between them would leave a visible step."""
    return local_network(windows) + 0.5 * windows.mean(dim=(1, 3, 4), keepdim=True)[:, :1]


def test_tiles_hand_over_gradually_so_no_seam_shows():
    y, x = torch.meshgrid(torch.linspace(0, 1, 40), torch.linspace(0, 1, 72), indexing="ij")
    windows = torch.stack([x, y, (x + y) / 2])[None, None].expand(1, 4, 3, 40, 72)
    tiled = upscale_tiled(context_network, windows, scale=4, tile=32, overlap=8)
    steps = tiled.diff(dim=-1).abs().mean(dim=(0, 1, 2, 3))  # mean step between neighbouring HR columns
    # Tiles start at 0, 24 and 40: any seam would be in HR columns 96..160.
    assert steps.max() < 2 * steps[:90].max()


def test_megan_runs_tiled_close_to_whole():
    """The tiny MEGAN with an image-space base (as the shipped weights have):
    its output follows the input's content, so a tile put in the wrong
    place, or a wrong part of the frame in a tile, changes the output far
    more than tiling does. (Without the base an untrained network's output
    barely varies, and swapping two tiles moved the error by 0.00014.)"""
    model = MEGAN(dataclasses.replace(PRESETS["tiny"], image_residual=1)).eval()
    upscaler = Upscaler(model, device="cpu")
    windows = torch.rand(1, 4, 3, 40, 72, generator=torch.Generator().manual_seed(0))
    whole = upscaler(windows)
    tiled = upscale_tiled(upscaler, windows, scale=4, tile=32, overlap=8, batch=2)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().mean() < 0.02
    # what a misplaced tile would cost: the output of one tile's region shifted by 8 LR pixels
    assert (whole[..., :, 32:] - whole[..., :, :-32]).abs().mean() > 0.1
