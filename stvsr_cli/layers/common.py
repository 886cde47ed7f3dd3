"""Plain convolutional parts shared by the blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LEAKY_SLOPE = 0.1  # the slope EDVR and Zooming Slow-Mo use throughout


def leaky_relu(x: Tensor, inplace: bool = False) -> Tensor:
    """LeakyReLU with the shared slope. `inplace=True` where x is a fresh
    result nothing else holds (a convolution's output): a new full-size
    tensor per activation costs more than the activation on the CPU."""
    return F.leaky_relu(x, LEAKY_SLOPE, inplace=inplace)


def is_channels_last(x: Tensor) -> bool:
    """Whether the channels of x, (..., C, H, W), are innermost in memory (NHWC).

    A map of one channel is the same in either layout and counts as NCHW.
    """
    return x.shape[-3] > 1 and x.stride(-3) == 1


def empty_frames_like(x: Tensor, frames: int | None = None, channels: int | None = None) -> Tensor:
    """An uninitialised (B, frames, channels, H, W) tensor (x's sizes where not
    given) whose maps are laid out as x's: channels-last if x's are.

    Features of several frames, (B, T, C, H, W), are always (B * T, C, H, W)
    maps with their first dimension split, so that convolutions see them as
    one batch in the layout the network runs in. `torch.cat` and
    `torch.stack` of such tensors along T or C return NCHW copies on any
    input; building the result in a tensor from here and filling it by
    slices keeps the layout.
    """
    b, t, c, h, w = x.shape
    t, c = frames or t, channels or c
    layout = torch.channels_last if is_channels_last(x) else torch.contiguous_format
    return torch.empty(b * t, c, h, w, dtype=x.dtype, device=x.device, memory_format=layout).view(b, t, c, h, w)


def check_frames(frames: Tensor, input_frames: int, size_multiple: int, network: str) -> None:
    """Refuse input that is not (B, input_frames, 3, H, W) with H and W multiples of `size_multiple`,
    saying what `network` takes."""
    expected = f"(B, {input_frames}, 3, H, W) with H and W multiples of {size_multiple}"
    if frames.dim() != 5 or frames.shape[1] != input_frames or frames.shape[2] != 3:
        raise ValueError(f"{network} takes frames shaped {expected}, got {tuple(frames.shape)}")
    if frames.shape[-2] % size_multiple or frames.shape[-1] % size_multiple:
        raise ValueError(
            f"{network} takes frames shaped {expected}, got {tuple(frames.shape)}; stvsr_cli.Upscaler pads other sizes"
        )


def flatten_frames(x: Tensor) -> Tensor:
    """(B, T, C, H, W) -> (B * T, C, H, W): a view where the memory allows,
    else a copy in x's layout (`Tensor.flatten` would copy to NCHW)."""
    b, t = x.shape[:2]
    if b > 1 and t > 1 and x.stride(0) != t * x.stride(1):  # e.g. x[:, 1:] of a batch
        x = empty_frames_like(x).copy_(x)
    return x.flatten(0, 1)


def select_frames(x: Tensor, indices: Tensor) -> Tensor:
    """x[:, indices] for (B, T, C, H, W) x, in x's layout. (Indexing
    channels-last frames gathers them a pixel at a time; here each frame is
    one block copy.)"""
    if not is_channels_last(x):
        return x.index_select(1, indices)
    return x.permute(0, 1, 3, 4, 2).index_select(1, indices).permute(0, 1, 4, 2, 3)


def frames_as_channels(x: Tensor) -> Tensor:
    """(B, T, C, H, W) -> (B, T * C, H, W), channel t * C + c holding frame t's
    channel c, in x's layout: a view of NCHW frames, a copy of channels-last
    ones (there a pixel's channels must become all T frames' channels)."""
    b, t, c, h, w = x.shape
    if not is_channels_last(x):
        return x.flatten(1, 2)
    out = torch.empty(b, t * c, h, w, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    out.view(b, t, c, h, w).copy_(x)
    return out


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """A 3x3 convolution that keeps the spatial size (or halves it with stride 2)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)


class ResidualBlock(nn.Module):
    """x + conv(relu(conv(x))), without batch norm (EDVR, Zooming Slow-Mo).

    The convolutions start at a tenth of their default scale so a deep stack
    begins close to the identity and trains stably (EDVR's initialisation).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x), inplace=True))


class ConvLSTMCell(nn.Module):
    """One step of a convolutional LSTM (Shi et al. 2015): all four gates from
    one 3x3 convolution over the input and the hidden state."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gates = conv3x3(2 * channels, 4 * channels)

    def forward(self, x: Tensor, hidden: Tensor, cell: Tensor) -> tuple[Tensor, Tensor]:
        # (N, 4C, H, W) -> four (N, C, H, W) gates
        i, f, o, g = self.gates(torch.cat([x, hidden], dim=1)).chunk(4, dim=1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        hidden = torch.sigmoid(o) * torch.tanh(cell)
        return hidden, cell
