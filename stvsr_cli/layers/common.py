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
