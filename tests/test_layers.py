"""The reusable blocks: shapes, and agreement with their definitions."""

import torch
import torch.nn.functional as F

import pytest

from stvsr_cli.layers import (
    ConvLSTMCell,
    FeaturePyramid,
    ModulatedDeformConv,
    NonLocalBlock,
    PCDAlignment,
    ResidualBlock,
    empty_frames_like,
    flatten_frames,
    frames_as_channels,
    is_channels_last,
    select_frames,
)

LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def _naive_nonlocal(block: NonLocalBlock, x: torch.Tensor) -> torch.Tensor:
    """Eqs. 1-3 written out over every position of the map."""
    u, v, g = (proj(x).flatten(2) for proj in (block.u, block.v, block.g))  # (N, C', HW)
    attention = torch.softmax(u.transpose(1, 2) @ v, dim=-1)  # (N, HW, HW), rows over j
    y = (attention @ g.transpose(1, 2)).transpose(1, 2).reshape(x.shape[0], -1, *x.shape[2:])
    return block.w_z(y) + x


def _randomise(module: torch.nn.Module) -> None:
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.2)


def test_nonlocal_block_on_one_window_is_the_papers_global_attention():
    block = NonLocalBlock(8, window=32)
    _randomise(block)
    x = torch.randn(2, 8, 12, 20)
    torch.testing.assert_close(block(x), _naive_nonlocal(block, x), rtol=1e-4, atol=1e-5)


def test_nonlocal_block_starts_as_identity():
    x = torch.randn(1, 8, 10, 10)
    assert torch.equal(NonLocalBlock(8, window=4)(x), x)


def test_nonlocal_windows_ignore_padding():
    """Each window, including the padded partial ones at the edges, attends
    only within itself: the same as running the block on that crop alone."""
    block = NonLocalBlock(8, window=8)
    _randomise(block)
    x = torch.randn(1, 8, 12, 20)
    out = block(x)
    for rows, cols in [(slice(0, 8), slice(0, 8)), (slice(0, 8), slice(16, 20)), (slice(8, 12), slice(16, 20))]:
        torch.testing.assert_close(out[..., rows, cols], _naive_nonlocal(block, x[..., rows, cols]), rtol=1e-4, atol=1e-5)


def test_deformable_conv_with_zero_offsets_is_a_half_weighted_convolution():
    """Zero-initialised offsets and masks sigmoid(0) = 0.5: training starts from an ordinary convolution."""
    layer = ModulatedDeformConv(8, offset_channels=6, groups=2)
    x = torch.randn(2, 8, 9, 11)
    expected = 0.5 * F.conv2d(x, layer.conv.weight, padding=1) + layer.conv.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x, torch.randn(2, 6, 9, 11)), expected, rtol=1e-4, atol=1e-5)


def test_deformable_conv_integer_offset_shifts_the_sampling():
    """An offset of exactly one pixel down, with full masks, samples the next row."""
    layer = ModulatedDeformConv(4, offset_channels=4, groups=1)
    torch.nn.init.zeros_(layer.offset_mask.weight)
    with torch.no_grad():
        bias = torch.zeros(27)
        bias[0:18:2] = 1.0  # dy = +1 for all 9 taps (torchvision's (dy, dx) pairs)
        bias[18:] = 30.0  # masks ~1
        layer.offset_mask.bias.copy_(bias)
    x = torch.randn(1, 4, 10, 7)
    shifted = F.pad(x[:, :, 1:], (0, 0, 0, 1))  # row r holds row r + 1, zeros below
    expected = F.conv2d(shifted, layer.conv.weight, layer.conv.bias, padding=1)
    # rows whose taps all fall inside the image in both versions
    torch.testing.assert_close(layer(x, torch.zeros(1, 4, 10, 7))[:, :, 1:-2], expected[:, :, 1:-2], rtol=1e-4, atol=1e-4)


def test_deformable_conv_reads_offsets_group_by_group_as_dcnv2_does():
    """DCNv2's DCN_sep (EDVR, Zooming Slow-Mo) and torchvision lay the 27 G
    channels of the offset head out as offsets (group, tap, (dy, dx)), then
    masks (group, tap): group 0's channels move group 0's input channels only."""
    layer = ModulatedDeformConv(4, offset_channels=4, groups=2)
    with torch.no_grad():
        bias = torch.zeros(2 * 27)
        bias[0:18:2] = 1.0  # group 0: dy = +1 on all 9 taps
        bias[18 + 1:36:2] = 1.0  # group 1: dx = +1 on all 9 taps
        bias[36:] = 30.0  # masks ~1
        layer.offset_mask.bias.copy_(bias)
    x = torch.randn(1, 4, 10, 9)
    down = F.pad(x[:, :2, 1:], (0, 0, 0, 1))  # input channels 0, 1 (group 0) one row down
    right = F.pad(x[:, 2:, :, 1:], (0, 1))  # channels 2, 3 (group 1) one column right
    expected = F.conv2d(torch.cat([down, right], 1), layer.conv.weight, layer.conv.bias, padding=1)
    out = layer(x, torch.zeros(1, 4, 10, 9))
    torch.testing.assert_close(out[:, :, 1:-2, 1:-2], expected[:, :, 1:-2, 1:-2], rtol=1e-4, atol=1e-4)


def test_pyramid_and_pcd_shapes():
    pyramid = FeaturePyramid(8)
    levels = pyramid(torch.randn(3, 8, 16, 24))
    assert [tuple(level.shape) for level in levels] == [(3, 8, 16, 24), (3, 8, 8, 12), (3, 8, 4, 6)]
    aligned = PCDAlignment(8, groups=2)(levels, pyramid(torch.randn(3, 8, 16, 24)))
    assert aligned.shape == (3, 8, 16, 24)


def test_residual_block_and_convlstm_cell_shapes():
    x = torch.randn(2, 8, 5, 7)
    assert ResidualBlock(8)(x).shape == x.shape
    hidden, cell = ConvLSTMCell(8)(x, torch.zeros_like(x), torch.zeros_like(x))
    assert hidden.shape == cell.shape == x.shape
    assert hidden.abs().max() < 1  # h = o * tanh(c)


def _frames(b: int, t: int, c: int, h: int, w: int, layout: torch.memory_format) -> torch.Tensor:
    """(B, T, C, H, W) features: (B * T, C, H, W) maps in `layout`, first dimension split."""
    return torch.randn(b * t, c, h, w).contiguous(memory_format=layout).unflatten(0, (b, t))


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_frame_helpers_give_the_plain_results_in_the_features_layout(layout):
    x = _frames(2, 5, 6, 4, 7, layout)
    channels_last = layout == torch.channels_last
    assert is_channels_last(x) == channels_last

    new = empty_frames_like(x, frames=3, channels=8)
    assert new.shape == (2, 3, 8, 4, 7) and is_channels_last(new) == channels_last

    later = x[:, 1:]  # not a view-able flatten when B > 1: copied, in the same layout
    flat = flatten_frames(later)
    assert torch.equal(flat, later.reshape(8, 6, 4, 7))
    assert flat.is_contiguous(memory_format=layout)
    assert flatten_frames(x).data_ptr() == x.data_ptr()  # whole features: a view

    stacked = frames_as_channels(x)
    assert torch.equal(stacked, x.reshape(2, 30, 4, 7)) and stacked.is_contiguous(memory_format=layout)

    indices = torch.tensor([4, 0, 0, 2])
    selected = select_frames(x, indices)
    assert torch.equal(selected, x[:, indices]) and is_channels_last(selected) == channels_last


def test_nonlocal_block_is_the_same_on_channels_last_maps():
    torch.manual_seed(0)
    block = NonLocalBlock(8, window=4)
    _randomise(block)
    x = torch.randn(2, 8, 6, 10)  # windows of 4: padded to 8 x 12
    out = block(x.contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, block(x), rtol=1e-5, atol=1e-5)
