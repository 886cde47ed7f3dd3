"""Reusable building blocks: any network made of convolutions, residual blocks,
windowed non-local attention or deformable alignment can use them. The MEGAN
network in `stvsr_cli.megan` composes them."""

from .attention import NonLocalBlock
from .common import (
    LEAKY_SLOPE,
    ConvLSTMCell,
    ResidualBlock,
    check_frames,
    conv3x3,
    empty_frames_like,
    flatten_frames,
    frames_as_channels,
    is_channels_last,
    leaky_relu,
    select_frames,
)
from .deformable import FeaturePyramid, ModulatedDeformConv, PCDAlignment

__all__ = [
    "LEAKY_SLOPE",
    "ConvLSTMCell",
    "FeaturePyramid",
    "ModulatedDeformConv",
    "NonLocalBlock",
    "PCDAlignment",
    "ResidualBlock",
    "check_frames",
    "conv3x3",
    "empty_frames_like",
    "flatten_frames",
    "frames_as_channels",
    "is_channels_last",
    "leaky_relu",
    "select_frames",
]
